"""A private Knot DNS (Debian's `knot`) on loopback: authoritative for one zone, taking
RFC 2136 updates signed with one TSIG key; stopped when its context ends, also on failure."""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from tests.helpers import free_port, wait_for
from web_harness import Running, running

KEY_NAME = "acme-update"
ALGORITHM = "hmac-sha256"


def new_secret() -> str:
    """A TSIG secret as `keymgr -t` prints one: 32 random bytes in base64."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(frozen=True)
class Knot:
    port: int
    zone: str
    secret: str
    process: Running

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.process.output()

    def ask(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        response, _ = dns.query.udp_with_fallback(query, "127.0.0.1", 5, self.port)
        return response

    def serial(self) -> int:
        """The zone's SOA serial: 1 as loaded, one more for each update applied."""
        [soa] = self.ask(self.zone, dns.rdatatype.SOA).answer
        return int(soa[0].serial)

    def txt(self, name: str) -> list[str]:
        """The TXT values at `name`, as a resolver asking this server sees them."""
        response = self.ask(name, dns.rdatatype.TXT)
        return [
            b"".join(record.strings).decode()
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for record in rrset
        ]


ZONE_FILE = """\
$ORIGIN {zone}.
$TTL 60
@     SOA  ns1 hostmaster 1 3600 600 86400 60
@     NS   ns1
ns1   A    127.0.0.1
mail  A    127.0.0.1
"""

CONFIG = """\
server:
    rundir: "{folder}"
    pidfile: "{folder}/knot.pid"
    listen: 127.0.0.1@{port}
control:
    listen: "{folder}/knot.sock"
database:
    storage: "{folder}/db"
log:
  - target: stdout
    any: info
key:
  - id: {key}
    algorithm: {algorithm}
    secret: {secret}
acl:
  - id: acme
    key: {key}
    action: update
zone:
  - domain: {zone}
    storage: "{folder}"
    file: "{zone}.zone"
    zonefile-sync: -1
    acl: acme
"""


def answers(port: int, zone: str) -> bool:
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    try:
        response = dns.query.udp(query, "127.0.0.1", 1, port)
    except (OSError, dns.exception.DNSException):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


@contextlib.contextmanager
def knot(folder: Path, zone: str) -> Iterator[Knot]:
    """knotd serving `zone` on 127.0.0.1:<free port>, updates allowed with KEY_NAME."""
    (folder / "db").mkdir(parents=True, exist_ok=True)  # the journal of the updates
    port, secret = free_port(), new_secret()
    (folder / f"{zone}.zone").write_text(ZONE_FILE.format(zone=zone))
    config = CONFIG.format(
        folder=folder, port=port, key=KEY_NAME, algorithm=ALGORITHM, secret=secret, zone=zone
    )
    (folder / "knot.conf").write_text(config)
    with running(["knotd", "-c", str(folder / "knot.conf")]) as process:
        wait_for(
            lambda: answers(port, zone) or process.proc.poll() is not None,
            30,
            f"Knot answering for {zone}",
        )
        assert process.proc.poll() is None, process.output()
        yield Knot(port, zone, secret, process)
