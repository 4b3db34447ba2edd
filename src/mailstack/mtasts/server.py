"""The MTA-STS policy map for Postfix's `smtp_tls_policy_maps`, over socketmap.

Its own socket, apart from the lookup service's, because it needs no datastore: the relay
runs it too. The key is Postfix's next-hop: a recipient domain (with a `:port` when a
transport says so, kept out of the lookup); a `[host]` next-hop names a host, not a domain
with a policy, and gets NOTFOUND, as does every other map name. Answers take a DNS query and
an HTTPS fetch at worst, so each connection's requests are answered in order in a task.

With a DANE check (a DNSSEC-validating resolver), an `enforce` domain whose MX hosts all
have validated TLSA records gets `dane` instead: DANE wins over MTA-STS (RFC 8461 section 2).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from mailstack.lookup import netstring
from mailstack.lookup.socketmap import IDLE_TIMEOUT, split_request
from mailstack.mtasts.lookup import PolicyLookup
from mailstack.mtasts.policy import postfix_policy
from mailstack.names import try_domain
from mailstack.netserver import Exchange, ProtocolListener, RequestConnection

if TYPE_CHECKING:
    from mailstack.mtasts.dane import DaneCheck

log = logging.getLogger(__name__)

MAP_NAME = "mta-sts"
NOT_FOUND = b"NOTFOUND "


def destination_domain(key: str) -> str | None:
    """The domain of a next-hop key: `example.com`, `example.com:2525`; None for `[host]`,
    an address, or anything that is not a domain."""
    name = key.strip()
    if name.startswith("["):
        return None
    host, colon, port = name.rpartition(":")
    if colon and port.isdigit():
        name = host
    return try_domain(name.rstrip("."))


class MtaStsMap(ProtocolListener):
    name = "mta-sts map"

    def __init__(
        self,
        lookup: PolicyLookup,
        *,
        dane: DaneCheck | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        super().__init__()
        self.lookup = lookup
        self.dane = dane
        self.idle_timeout = idle_timeout

    def make_protocol(self) -> asyncio.Protocol:
        exchange = Exchange(split=split_request, answer=self._answer)
        return RequestConnection(self, exchange, self.idle_timeout)

    async def _answer(self, payload: bytes) -> tuple[bytes, bool]:
        return netstring.encode(await self.respond(payload)), True

    async def respond(self, payload: bytes) -> bytes:
        """One reply for one request; never raises. An internal error is TEMP: Postfix
        defers the mail rather than send it without the policy."""
        name, space, key = payload.decode("utf-8", "replace").partition(" ")
        domain = destination_domain(key) if space and name == MAP_NAME else None
        if domain is None:
            return NOT_FOUND
        try:
            policy = await self.lookup.policy_for(domain)
            answer = postfix_policy(policy) if policy is not None else None
            if answer is not None and self.dane is not None and await self.dane.covers(domain):
                answer = "dane"
        except Exception:
            log.exception("MTA-STS lookup of %s failed", domain)
            return b"TEMP internal error"
        return NOT_FOUND if answer is None else b"OK " + answer.encode("ascii")
