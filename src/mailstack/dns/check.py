"""Compare the expected records (`mailstack.dns.records`) with what a resolver answers.

Each expected record becomes one finding: ok, missing, wrong (with what was found), error
(the lookup itself failed) or skipped (PTR records when the server name has no address, which
its own finding already reports). The comparison is written against `Lookup`, a callable
`(name, type) -> Answer`; `DnsLookup` is the real one, on dnspython, pointed at the system's
resolver or at one given name server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import dns.exception
import dns.name
import dns.rdata
import dns.rdtypes.IN.SRV
import dns.rdtypes.mxbase
import dns.rdtypes.nsbase
import dns.rdtypes.txtbase
import dns.resolver

from mailstack.dns.records import Record, tags
from mailstack.errors import MailstackError

Status = Literal["ok", "missing", "wrong", "error", "skipped"]
FAILED: frozenset[str] = frozenset({"missing", "wrong", "error"})
DEFAULT_TIMEOUT = 5.0
GIVE_UP_AFTER = 3  # timeouts in a row: the resolver is unreachable, stop waiting on it


@dataclass(frozen=True)
class Answer:
    """What a lookup found: the records in presentation form (names lower case with the final
    dot, as the expected records have them), except TXT: its strings joined; or NXDOMAIN; or
    why there is no answer at all."""

    records: tuple[str, ...] = ()
    nxdomain: bool = False
    error: str | None = None


Lookup = Callable[[str, str], Answer]


@dataclass(frozen=True)
class Finding:
    """One expected record and what is published in its place."""

    record: Record
    status: Status
    found: tuple[str, ...] = ()
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "purpose": self.record.purpose,
            "name": self.record.name,
            "type": self.record.rtype,
            "expected": self.record.value,
            "found": list(self.found),
            "detail": self.detail,
        }


class ResolverUnavailable(MailstackError):
    """No resolver to ask: the system has no configuration and none was given."""


def _name(name: dns.name.Name) -> str:
    return name.to_text().lower()


def _text(rdata: dns.rdata.Rdata) -> str:
    if isinstance(rdata, dns.rdtypes.txtbase.TXTBase):
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if isinstance(rdata, dns.rdtypes.mxbase.MXBase):
        return f"{rdata.preference} {_name(rdata.exchange)}"
    if isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
        return f"{rdata.priority} {rdata.weight} {rdata.port} {_name(rdata.target)}"
    if isinstance(rdata, dns.rdtypes.nsbase.NSBase):  # CNAME, PTR
        return _name(rdata.target)
    return rdata.to_text()


class DnsLookup:
    """Lookups through the system's resolver (/etc/resolv.conf) or one name server.

    After GIVE_UP_AFTER timeouts in a row the remaining lookups fail at once, so that an
    unreachable resolver costs seconds, not a timeout per record.
    """

    def __init__(
        self, nameserver: tuple[str, int] | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if nameserver is None:
            try:
                resolver = dns.resolver.Resolver()
            except dns.exception.DNSException as exc:
                raise ResolverUnavailable(
                    f"cannot use the system's resolver ({exc}); give --nameserver ADDR"
                ) from None
        else:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [nameserver[0]]
            resolver.port = nameserver[1]
        resolver.lifetime = timeout
        resolver.use_edns(0, 0, 1232)
        self._resolver = resolver
        self._timeouts = 0

    def __call__(self, name: str, rtype: str) -> Answer:
        if self._timeouts >= GIVE_UP_AFTER:
            return Answer(error=f"not asked: the resolver timed out {self._timeouts} times")
        answer = self._resolve(name, rtype)
        self._timeouts = self._timeouts + 1 if answer.error == "timed out" else 0
        return answer

    def _resolve(self, name: str, rtype: str) -> Answer:
        try:
            answer = self._resolver.resolve(
                f"{name}.", rtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return Answer(nxdomain=True)
        except dns.resolver.NoNameservers as exc:
            # "All nameservers failed to answer the query N IN T: Server … answered REFUSED"
            why = str(exc).split(": ", 1)[-1]
            return Answer(error=f"no usable answer ({why})")
        except dns.exception.Timeout:
            return Answer(error="timed out")
        except dns.exception.DNSException as exc:
            return Answer(error=str(exc) or type(exc).__name__)
        if answer.rrset is None:
            return Answer()
        return Answer(tuple(sorted(_text(rdata) for rdata in answer.rrset)))


def _host(text: str) -> str:
    return text.rstrip(".").lower() or "."


def _is_spf(text: str) -> bool:
    """RFC 7208 4.5: the record starts with exactly `v=spf1`, then a space or its end."""
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


def _version_is(text: str, version: str) -> bool:
    """A tag list whose first tag is `v=VERSION` (DMARC, MTA-STS, TLS-RPT)."""
    key, _, value = text.split(";", 1)[0].partition("=")
    return key.strip().lower() == "v" and value.strip() == version


def _spf_authorises(text: str, domain: str, server: str, addresses: Sequence[str]) -> bool:
    """Whether a pass mechanism names this server: `mx` (the domain's own MX), `a:SERVER`, or
    an `ip4:`/`ip6:` network holding one of its addresses. `include:` is not followed."""
    for term in text.split()[1:]:
        qualifier = term[0] if term[0] in "+-~?" else "+"
        if qualifier != "+":
            continue
        head, _, argument = term.lstrip("+").partition(":")
        mechanism = head.split("/")[0].lower()
        target = _host(argument.split("/")[0]) if argument else domain
        if mechanism == "mx" and target == domain:
            return True
        if mechanism == "a" and target == server:
            return True
        if mechanism in ("ip4", "ip6") and argument:
            try:
                network = ipaddress.ip_network(argument, strict=False)
            except ValueError:
                continue
            if any(ipaddress.ip_address(a) in network for a in addresses):
                return True
    return False


class _Checker:
    def __init__(self, server: str, lookup: Lookup) -> None:
        self.server = server
        self._lookup = lookup
        self._answers: dict[tuple[str, str], Answer] = {}

    def lookup(self, name: str, rtype: str) -> Answer:
        key = (name, rtype)
        if key not in self._answers:
            self._answers[key] = self._lookup(name, rtype)
        return self._answers[key]

    def addresses(self, name: str) -> Answer:
        """A and AAAA together; an error only when neither answered."""
        both = [self.lookup(name, "A"), self.lookup(name, "AAAA")]
        records = tuple(r for answer in both for r in answer.records)
        errors = [a.error for a in both if a.error]
        if not records and errors:
            return Answer(error="; ".join(dict.fromkeys(errors)))
        return Answer(records, nxdomain=all(a.nxdomain for a in both))

    def check(self, record: Record) -> list[Finding]:
        match (record.purpose, record.rtype):
            case ("MX", _):
                return [self._mx(record)]
            case ("SPF", _):
                return [self._spf(record)]
            case ("DKIM", _):
                return [self._dkim(record)]
            case (_, "TXT"):
                return [self._tag_record(record)]
            case (_, "CNAME"):
                return [self._host_name(record, any_address=record.purpose == "MTA-STS")]
            case ("SRV", _):
                return [self._srv(record)]
            case ("server", _):
                return [self._server(record)]
            case ("PTR", _):
                return self._ptr(record)
        raise ValueError(f"no check for {record.purpose} {record.rtype}")

    # -- one finding per kind of record ---------------------------------------------------

    @staticmethod
    def _failed_lookup(record: Record, answer: Answer) -> Finding | None:
        if answer.error is not None:
            return Finding(record, "error", (), f"lookup failed: {answer.error}")
        if not answer.records:
            what = "the name does not exist" if answer.nxdomain else f"no {record.rtype} record"
            return Finding(record, "missing", (), what)
        return None

    def _mx(self, record: Record) -> Finding:
        answer = self.lookup(record.name, "MX")
        if (failed := self._failed_lookup(record, answer)) is not None:
            return failed
        hosts = [_host(text.split()[-1]) for text in answer.records]
        if self.server not in hosts:
            return Finding(record, "wrong", answer.records, f"no MX points at {self.server}")
        others = sorted(set(hosts) - {self.server})
        detail = f"other MX hosts: {', '.join(others)}" if others else ""
        return Finding(record, "ok", answer.records, detail)

    def _spf(self, record: Record) -> Finding:
        answer = self.lookup(record.name, "TXT")
        if answer.error is not None:
            return Finding(record, "error", (), f"lookup failed: {answer.error}")
        spf = tuple(text for text in answer.records if _is_spf(text))
        if not spf:
            return Finding(record, "missing", (), "no v=spf1 record")
        if len(spf) > 1:
            detail = f"{len(spf)} v=spf1 records: RFC 7208 allows one (receivers see permerror)"
            return Finding(record, "wrong", spf, detail)
        addresses = self.addresses(self.server).records
        if not _spf_authorises(spf[0], record.name, self.server, addresses):
            detail = f"names neither mx nor an address of {self.server}"
            return Finding(record, "wrong", spf, detail)
        return Finding(record, "ok", spf)

    def _dkim(self, record: Record) -> Finding:
        answer = self.lookup(record.name, "TXT")
        if (failed := self._failed_lookup(record, answer)) is not None:
            return failed
        expected = tags(record.value).get("p", "")
        keys = [tags(text) for text in answer.records]
        keys = [k for k in keys if "p" in k and k.get("v", "DKIM1") == "DKIM1"]
        if any(k["p"] == expected for k in keys):
            return Finding(record, "ok", answer.records)
        detail = "the p= key is not this server's key" if keys else "no DKIM key record (p=)"
        return Finding(record, "wrong", answer.records, detail)

    def _tag_record(self, record: Record) -> Finding:
        """DMARC, MTA-STS and TLS-RPT: exactly one TXT starting with their v= tag."""
        version = tags(record.value)["v"]
        answer = self.lookup(record.name, "TXT")
        if (failed := self._failed_lookup(record, answer)) is not None:
            return failed
        matching = tuple(text for text in answer.records if _version_is(text, version))
        if not matching:
            return Finding(record, "wrong", answer.records, f"no record starts with v={version}")
        if len(matching) > 1:
            detail = f"{len(matching)} v={version} records: receivers use none of them"
            return Finding(record, "wrong", matching, detail)
        found = tags(matching[0])
        if record.purpose == "MTA-STS" and found.get("id") != tags(record.value)["id"]:
            detail = "a different id: it must change whenever the policy does"
            return Finding(record, "wrong", matching, detail)
        if record.purpose == "TLS-RPT" and not found.get("rua"):
            return Finding(record, "wrong", matching, "no rua= address for the reports")
        return Finding(record, "ok", matching)

    def _host_name(self, record: Record, *, any_address: bool) -> Finding:
        """A CNAME to the server name; A/AAAA records instead are fine when they are the
        server's (or, for the MTA-STS policy host, any web server's)."""
        cname = self.lookup(record.name, "CNAME")
        if cname.error is not None:
            return Finding(record, "error", (), f"lookup failed: {cname.error}")
        addresses = self.addresses(record.name)
        if cname.records:
            target = _host(cname.records[0])
            if target == self.server:
                return Finding(record, "ok", cname.records)
            if any_address and addresses.records:
                return Finding(record, "ok", cname.records, f"a CNAME to {target}")
            return Finding(record, "wrong", cname.records, f"a CNAME to {target}")
        if (failed := self._failed_lookup(record, addresses)) is not None:
            return failed
        if any_address:
            return Finding(record, "ok", addresses.records, "addresses instead of a CNAME")
        own = set(self.addresses(self.server).records)
        if own and set(addresses.records) <= own:
            return Finding(record, "ok", addresses.records, "the server's addresses, no CNAME")
        detail = f"addresses that are not {self.server}'s"
        return Finding(record, "wrong", addresses.records, detail)

    def _srv(self, record: Record) -> Finding:
        answer = self.lookup(record.name, "SRV")
        if (failed := self._failed_lookup(record, answer)) is not None:
            return failed
        _priority, _weight, port, target = record.value.split()
        found = [text.split() for text in answer.records]
        if _host(target) == ".":
            if all(_host(f[-1]) == "." for f in found):
                return Finding(record, "ok", answer.records)
            detail = "announces a service this server does not offer"
            return Finding(record, "wrong", answer.records, detail)
        if any(f[2] == port and _host(f[3]) == self.server for f in found if len(f) == 4):
            return Finding(record, "ok", answer.records)
        detail = f"no target {self.server} on port {port}"
        return Finding(record, "wrong", answer.records, detail)

    def _server(self, record: Record) -> Finding:
        answer = self.addresses(self.server)
        if answer.error is not None:
            return Finding(record, "error", (), f"lookup failed: {answer.error}")
        if not answer.records:
            detail = f"{self.server} has no A or AAAA record: no one can deliver to it"
            return Finding(record, "missing", (), detail)
        return Finding(record, "ok", answer.records)

    def _ptr(self, record: Record) -> list[Finding]:
        addresses = self.addresses(self.server).records
        if not addresses:
            detail = f"{self.server} has no address to look up"
            return [Finding(record, "skipped", (), detail)]
        findings = []
        for address in addresses:
            reverse = ipaddress.ip_address(address).reverse_pointer
            one = replace(record, name=reverse)
            answer = self.lookup(reverse, "PTR")
            if (failed := self._failed_lookup(one, answer)) is not None:
                findings.append(replace(failed, detail=f"{address}: {failed.detail}"))
            elif self.server in (_host(name) for name in answer.records):
                findings.append(Finding(one, "ok", answer.records, address))
            else:
                detail = f"{address} does not resolve back to {self.server}"
                findings.append(Finding(one, "wrong", answer.records, detail))
        return findings


def check_records(records: Sequence[Record], server: str, lookup: Lookup) -> list[Finding]:
    """One finding per expected record (per address of the server for PTR records), in the
    order of `records`. Each name and type is looked up once."""
    checker = _Checker(server, lookup)
    return [finding for record in records for finding in checker.check(record)]
