"""Whether DANE covers a destination, so that the policy map lets it win over MTA-STS
(RFC 8461 section 2: a sender that does DANE uses it where TLSA records exist).

DANE covers a domain when its MX RRset and each MX host's `_25._tcp` TLSA RRset come
DNSSEC-validated (the AD bit of the validating resolver Postfix asks too, trusted as Postfix
trusts it) and each TLSA RRset holds a DANE-TA(2) or DANE-EE(3) record, the usages Postfix
uses for SMTP (RFC 7672 section 3.1.3). Anything less (a host without TLSA, an unsigned
zone, a DNS failure) leaves the MTA-STS policy in force, never something weaker.

A verdict is kept for the records' TTL, at most CHECK_INTERVAL (when the policy's record is
looked at again too); a DNS failure is retried after FAILURE_TTL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.nameserver
import dns.resolver
import dns.rrset

from mailstack.mtasts.lookup import CHECK_INTERVAL
from mailstack.mtasts.source import DNS_TIMEOUT

log = logging.getLogger(__name__)

FAILURE_TTL = 60.0
MAX_ENTRIES = 50_000
DANE_USAGES = frozenset({2, 3})  # DANE-TA, DANE-EE; PKIX-TA/EE are unusable for SMTP


@dataclass(frozen=True)
class Verdict:
    dane: bool
    until: float


class DaneCheck:
    """Asks one validating resolver (address, port) about MX and TLSA records."""

    def __init__(
        self, nameserver: tuple[str, int], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        address, port = nameserver
        self.resolver = dns.asyncresolver.Resolver(configure=False)
        self.resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port)]
        self.resolver.use_edns(0, dns.flags.DO, 1232)
        self.resolver.flags = dns.flags.RD | dns.flags.AD  # ask for the AD bit (RFC 6840)
        self.resolver.lifetime = DNS_TIMEOUT
        self.clock = clock
        self.verdicts: dict[str, Verdict] = {}

    async def covers(self, domain: str) -> bool:
        """True when every MX host of `domain` has usable, validated TLSA records."""
        now = self.clock()
        known = self.verdicts.get(domain)
        if known is not None and known.until > now:
            return known.dane
        try:
            dane, ttl = await self._check(domain)
        except dns.exception.DNSException as exc:
            log.warning("DANE check of %s failed, MTA-STS applies: %s", domain, exc)
            dane, ttl = False, FAILURE_TTL
        if dane and (known is None or not known.dane):
            log.info("%s: every MX has DNSSEC-validated TLSA records, DANE applies", domain)
        self.verdicts.pop(domain, None)
        self.verdicts[domain] = Verdict(dane, now + min(ttl, CHECK_INTERVAL))
        if len(self.verdicts) > MAX_ENTRIES:
            del self.verdicts[next(iter(self.verdicts))]  # the oldest verdict
        return dane

    async def _check(self, domain: str) -> tuple[bool, float]:
        mx = await self._validated(f"{domain}.", "MX")
        if mx is None:
            return False, CHECK_INTERVAL
        hosts = [rdata.exchange.to_text() for rdata in mx]
        ttl = float(mx.ttl)
        if not hosts or "." in hosts:  # a null MX (RFC 7505) takes no mail at all
            return False, ttl
        for host in hosts:
            tlsa = await self._validated(f"_25._tcp.{host}", "TLSA")
            if tlsa is None or not any(rdata.usage in DANE_USAGES for rdata in tlsa):
                return False, ttl
            ttl = min(ttl, float(tlsa.ttl))
        return True, ttl

    async def _validated(self, name: str, rdtype: str) -> dns.rrset.RRset | None:
        """The RRset when it exists and came validated; None otherwise."""
        try:
            answer = await self.resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None
        if answer.rrset is None or not answer.response.flags & dns.flags.AD:
            return None
        return answer.rrset
