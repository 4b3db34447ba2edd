"""DNS-01 by RFC 2136 dynamic update, signed with TSIG (RFC 8945), with dnspython.

The update goes to one server, the zone's primary (BIND, Knot, PowerDNS...); the zone is
`MAILSTACK_ACME_DNS_ZONE` or, when that is unset, the owner of the SOA the same server gives
for the record's name. After an update the server is asked for the TXT record until it shows
the new value: the ACME server is told to validate only then.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

# the record types read or written here, loaded now: dnspython imports each on first use,
# which may be after the worker dropped root
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TSIG
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update

from mailstack.acme.dns01 import Dns01Error
from mailstack.settings.values import HostPort

log = logging.getLogger("mailstack.acme")

TTL = 60  # seconds: the record lives minutes; a resolver must not keep an old value long
TIMEOUT = 10.0  # seconds per DNS exchange
VISIBLE_WITHIN = 60.0  # seconds for the server to show a value it accepted
POLL = 0.5

SERVER = "MAILSTACK_ACME_DNS_SERVER"
ZONE = "MAILSTACK_ACME_DNS_ZONE"
KEY_NAME = "MAILSTACK_ACME_DNS_TSIG_KEY_NAME"
SECRET = "MAILSTACK_ACME_DNS_TSIG_SECRET"  # noqa: S105 - a variable's name, not a secret
ALGORITHM = "MAILSTACK_ACME_DNS_TSIG_ALGORITHM"


@dataclass(frozen=True)
class TsigKey:
    name: str
    secret: str  # base64, as `tsig-keygen` and `keymgr -t` print it
    algorithm: str = "hmac-sha256"

    def __repr__(self) -> str:  # the secret stays out of tracebacks and logs
        return f"TsigKey(name={self.name!r}, algorithm={self.algorithm!r})"


@dataclass(frozen=True)
class Rfc2136Provider:
    """A `Dns01Provider` that updates `server` (signed with `tsig` when given)."""

    server: HostPort
    tsig: TsigKey | None = None
    zone: str | None = None
    timeout: float = TIMEOUT
    visible_within: float = VISIBLE_WITHIN

    def present(self, name: str, value: str) -> None:
        zone = self.zone_of(name)
        update = self._update(zone)
        update.add(dns.name.from_text(name), TTL, dns.rdatatype.TXT, _quoted(value))
        self._send(update, f"add the TXT record at {name}")
        log.info("TXT record at %s added on %s (zone %s)", name, self.server, zone)
        self._wait_visible(name, value)

    def cleanup(self, name: str, value: str) -> None:
        zone = self.zone_of(name)
        update = self._update(zone)
        update.delete(dns.name.from_text(name), dns.rdatatype.TXT, _quoted(value))
        self._send(update, f"remove the TXT record at {name}")
        log.info("TXT record at %s removed on %s", name, self.server)

    def zone_of(self, name: str) -> str:
        """The zone to update for `name`: the setting, or the server's SOA for the name."""
        if self.zone is not None:
            if not dns.name.from_text(name).is_subdomain(dns.name.from_text(self.zone)):
                raise Dns01Error(f"{name} is not in the zone {self.zone} ({ZONE})")
            return self.zone
        response = self._ask(name, dns.rdatatype.SOA)
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise Dns01Error(
                f"{self.server} ({SERVER}) answered {dns.rcode.to_text(rcode)} for the zone of "
                f"{name}: it must be a primary server of that zone"
            )
        for rrset in (*response.answer, *response.authority):
            if rrset.rdtype == dns.rdatatype.SOA:
                return rrset.name.to_text(omit_final_dot=True)
        raise Dns01Error(
            f"{self.server} ({SERVER}) gave no SOA record for {name}: set {ZONE} to the zone"
        )

    def _update(self, zone: str) -> dns.update.UpdateMessage:
        if self.tsig is None:
            return dns.update.UpdateMessage(zone)
        key = dns.tsig.Key(self.tsig.name, self.tsig.secret, self.tsig.algorithm)
        return dns.update.UpdateMessage(zone, keyring=key)

    def _address(self) -> str:
        try:
            found = socket.getaddrinfo(self.server.host, self.server.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise Dns01Error(f"cannot find {self.server.host} ({SERVER}): {exc}") from None
        return str(found[0][4][0])

    def _ask(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        try:
            response, _ = dns.query.udp_with_fallback(
                query, self._address(), self.timeout, self.server.port
            )
        except dns.exception.Timeout:
            raise Dns01Error(f"no answer from {self.server} ({SERVER})") from None
        except (OSError, dns.exception.DNSException) as exc:
            raise Dns01Error(f"asking {self.server} ({SERVER}) failed: {exc}") from None
        return response

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        try:
            response = dns.query.tcp(update, self._address(), self.timeout, self.server.port)
        except dns.tsig.PeerBadKey:
            raise Dns01Error(
                f"could not {what}: {self.server} does not know the TSIG key "
                f"{self._key_name()} (BADKEY): check {KEY_NAME} and {ALGORITHM}"
            ) from None
        except dns.tsig.PeerBadSignature:
            raise Dns01Error(
                f"could not {what}: {self.server} refused the TSIG signature of key "
                f"{self._key_name()} (BADSIG): check {SECRET} and {ALGORITHM}"
            ) from None
        except dns.tsig.PeerBadTime:
            raise Dns01Error(
                f"could not {what}: {self.server} refused the TSIG time (BADTIME): "
                "the clocks of this host and the DNS server differ"
            ) from None
        except dns.exception.Timeout:
            raise Dns01Error(f"could not {what}: no answer from {self.server} ({SERVER})") from None
        except (OSError, dns.exception.DNSException) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise Dns01Error(f"could not {what} on {self.server} ({SERVER}): {reason}") from None
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise Dns01Error(
                f"could not {what}: {self.server} answered {dns.rcode.to_text(rcode)}"
                f"{_RCODE_HINTS.get(rcode, '')}"
            )

    def _key_name(self) -> str:
        return self.tsig.name if self.tsig else "(none)"

    def _wait_visible(self, name: str, value: str) -> None:
        deadline = time.monotonic() + self.visible_within
        while True:
            response = self._ask(name, dns.rdatatype.TXT)
            for rrset in response.answer:
                if rrset.rdtype != dns.rdatatype.TXT:
                    continue
                if any(b"".join(r.strings) == value.encode("ascii") for r in rrset):
                    return
            if time.monotonic() >= deadline:
                raise Dns01Error(
                    f"{self.server} accepted the TXT record at {name} but did not show it "
                    f"within {self.visible_within:.0f} s"
                )
            time.sleep(POLL)


def _quoted(value: str) -> str:
    """A TXT record's text form of `value` (base64url: nothing to escape)."""
    return f'"{value}"'


_RCODE_HINTS = {
    dns.rcode.NOTAUTH: (
        f" (NOTAUTH: the server does not accept the key for this zone; check {KEY_NAME}, "
        f"{SECRET} and the server's update policy)"
    ),
    dns.rcode.REFUSED: (
        " (REFUSED: the server's update policy does not allow this key or address to change "
        "the name)"
    ),
    dns.rcode.NOTZONE: f" (NOTZONE: check {ZONE})",
}
