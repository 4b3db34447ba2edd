"""NSD (Debian package `nsd`) as a private authoritative name server for tests.

It runs in the foreground as root on a loopback address and port, with its configuration
and zone files in a temp folder; `running_nsd` stops it and removes the folder, also when
the test fails.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
from server_harness import free_port, stop_process, wait_for

NSD_CONF = """\
server:
    ip-address: {address}
    port: {port}
    username: ""
    chroot: ""
    zonesdir: "{folder}"
    database: ""
    zonelistfile: "{folder}/zone.list"
    xfrdfile: "{folder}/xfrd.state"
    xfrdir: "{folder}"
    pidfile: "{folder}/nsd.pid"
    logfile: "{folder}/nsd.log"
    server-count: 1
    verbosity: 1
remote-control:
    control-enable: no
"""


@dataclass(frozen=True)
class NameServer:
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def zone(origin: str, body: str) -> str:
    """A zone file: an SOA and NS for `origin`, then `body`."""
    return (
        f"$ORIGIN {origin}.\n$TTL 300\n"
        "@ IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 300\n"
        "@ IN NS ns.example.com.\n" + body
    )


def answers(host: str, port: int, origin: str) -> bool:
    query = dns.message.make_query(f"{origin}.", "SOA")
    try:
        reply = dns.query.udp(query, host, port=port, timeout=0.5)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


@contextlib.contextmanager
def running_nsd(
    zones: dict[str, str], host: str = "127.0.0.1", port: int | None = None
) -> Iterator[NameServer]:
    """NSD serving {zone name: zone text} on host:port (a free port when None)."""
    nsd = shutil.which("nsd") or "/usr/sbin/nsd"
    assert Path(nsd).exists(), "NSD is not installed: scripts/install.sh --test"
    folder = Path(tempfile.mkdtemp(prefix="mailstack-nsd-"))
    port = port or free_port(host)
    config = NSD_CONF.format(address=host, port=port, folder=folder)
    for name, text in zones.items():
        (folder / f"{name}.zone").write_text(text)
        config += f'zone:\n    name: "{name}"\n    zonefile: "{name}.zone"\n'
    (folder / "nsd.conf").write_text(config)
    proc = subprocess.Popen(
        [nsd, "-d", "-c", str(folder / "nsd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = folder / "nsd.log"
    try:
        first = next(iter(zones))
        try:
            wait_for(lambda: proc.poll() is not None or answers(host, port, first), 30, "NSD")
        except AssertionError:
            text = log.read_text() if log.exists() else ""
            raise AssertionError(f"NSD did not answer: {text}") from None
        if proc.poll() is not None:
            raise AssertionError(f"NSD exited with {proc.returncode}: {log.read_text()}")
        yield NameServer(host, port)
    finally:
        stop_process(proc)
        shutil.rmtree(folder, ignore_errors=True)
