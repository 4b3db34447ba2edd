"""A real authoritative name server for tests: NSD (Debian package `nsd`) in the foreground
as root on 127.0.0.1 and a free high port, its configuration and zone files in a temp folder.

Imported by the tests that resolve published records (`mailstack dns --check`, DKIM key
rotation); `running_nsd` stops NSD and removes its folder however the block ends.
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
import pytest
from server_harness import free_port, stop_process, wait_for


@dataclass(frozen=True)
class NameServer:
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


NSD_CONF = """\
server:
    ip-address: 127.0.0.1
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


def zone(origin: str, body: str) -> str:
    """A zone file: SOA and NS (ns.example.com) of ORIGIN, then BODY."""
    return (
        f"$ORIGIN {origin}.\n$TTL 300\n"
        "@ IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 300\n"
        "@ IN NS ns.example.com.\n" + body
    )


def answers(port: int, origin: str) -> bool:
    """NSD serves ORIGIN's SOA: it has loaded its zones."""
    query = dns.message.make_query(f"{origin}.", "SOA")
    try:
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


@contextlib.contextmanager
def running_nsd(zones: dict[str, str]) -> Iterator[NameServer]:
    """NSD serving {zone name: zone text}, answering before the block starts."""
    nsd = shutil.which("nsd") or "/usr/sbin/nsd"
    assert Path(nsd).exists(), "NSD is not installed: scripts/install.sh --test"
    folder = Path(tempfile.mkdtemp(prefix="mailstack-nsd-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        config = NSD_CONF.format(port=port, folder=folder)
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
        first = next(iter(zones))
        started = proc
        try:
            wait_for(lambda: started.poll() is not None or answers(port, first), 30, "NSD")
        except TimeoutError:
            pytest.fail(f"NSD did not answer: {log.read_text() if log.exists() else ''}")
        if proc.poll() is not None:
            pytest.fail(f"NSD exited with {proc.returncode}: {log.read_text()}")
        yield NameServer(port)
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(folder, ignore_errors=True)
