"""Resource abuse: hundreds of slow or idle connections must not take the server down.

300 ManageSieve connections from 25 addresses in 127.0.0.0/8 (12 each; the server serves
at most 10 per address and 200 in all) hold half-written commands, one byte more now and
then, while 100 sessions sit idle on submission (587) after the greeting. Meanwhile the
worker's memory stays under a generous bound, `mailstack health --profile server` passes,
the MX takes mail and IMAP shows it. Every socket is closed however the test ends.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.security.harness import MiB, health, server_profile, vm_rss, worker_pid
from tests.server.mailserver import MailServer, Ports, deliver, wait_for_subject

SIEVE_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 27)]  # 25 client addresses
SIEVE_PER_ADDRESS = 12
SIEVE_PER_CLIENT_LIMIT = 10  # mailstack.managesieve.server.MAX_PER_CLIENT
SIEVE_TOTAL_LIMIT = 200  # MAX_CONNECTIONS
SUBMISSION_IDLE = 100
RSS_BOUND = 150 * MiB
#: Commands left unfinished: a literal announced and never sent in full, a line never ended.
PARTIAL = [b'AUTHENTICATE "PLAIN" {40+}\r\nAGFs', b"CAPABIL", b'PUTSCRIPT "x" {9']


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[MailServer, Ports]]:
    ports = Ports()
    with server_profile(ports) as running:
        yield running, ports


def sieve_connection(port: int, source: str) -> tuple[socket.socket, bool]:
    """A connection and whether it was served (greeting) or turned away (BYE)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
    data = b""
    try:
        while not re.search(rb"(?m)^(OK|BYE).*\r\n", data):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except BaseException:
        sock.close()
        raise
    return sock, bool(re.search(rb"(?m)^OK", data))


def still_open(sock: socket.socket) -> bool:
    """True while the server has neither closed the connection nor said anything."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # data (a BYE) or b"" (closed): not held any more
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
    return False


def test_slow_and_idle_connection_floods(server: tuple[MailServer, Ports]) -> None:
    mail, ports = server
    worker = worker_pid(mail)
    rss_before = vm_rss(worker)
    sockets: list[socket.socket] = []
    problems: list[str] = []
    try:
        served: list[socket.socket] = []
        per_address: Counter[str] = Counter()
        turned_away = 0
        started = time.monotonic()
        for address in SIEVE_ADDRESSES:
            for _ in range(SIEVE_PER_ADDRESS):
                sock, ok = sieve_connection(ports.managesieve, address)
                sockets.append(sock)
                if ok:
                    served.append(sock)
                    per_address[address] += 1
                    sock.sendall(PARTIAL[len(served) % len(PARTIAL)])
                else:
                    turned_away += 1
        for sock in served:  # slow: one more byte on each, the command still unfinished
            sock.sendall(b"A")
        checked = health(mail)
        print(f"health with the ManageSieve flood: exit {checked.returncode} {checked.stderr}")
        if checked.returncode != 0:
            problems.append(f"health failed under the ManageSieve flood: {checked.stderr}")
        idle = []
        for n in range(SUBMISSION_IDLE):
            sock = socket.create_connection(
                ("127.0.0.1", ports.submission),
                timeout=20,
                source_address=(f"127.0.1.{1 + n % 10}", 0),
            )
            sockets.append(sock)
            idle.append(sock)
        greeted = 0
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.settimeout(0.5)
                greeted += sock.recv(4096).startswith(b"220")
        opened = time.monotonic() - started
        rss_loaded = vm_rss(worker)
        held = sum(still_open(sock) for sock in served)
        print(
            f"ManageSieve: {len(sockets) - len(idle)} connections from {len(SIEVE_ADDRESSES)} "
            f"addresses: {len(served)} served (at most {max(per_address.values())} per "
            f"address), {turned_away} turned away, {held} still held; submission: "
            f"{len(idle)} idle, {greeted} greeted; opened in {opened:.1f} s; worker VmRSS "
            f"{rss_before / MiB:.1f} -> {rss_loaded / MiB:.1f} MiB (bound {RSS_BOUND // MiB})"
        )
        if len(served) != SIEVE_TOTAL_LIMIT:
            problems.append(f"{len(served)} ManageSieve connections served, not 200")
        if max(per_address.values()) > SIEVE_PER_CLIENT_LIMIT:
            problems.append(f"one address got {max(per_address.values())} connections")
        if rss_loaded >= RSS_BOUND:
            problems.append(f"worker VmRSS {rss_loaded / MiB:.1f} MiB")

        checked = health(mail)
        print(f"health with both floods: exit {checked.returncode} {checked.stderr}".strip())
        if checked.returncode != 0:
            problems.append(
                f"health failed with {len(idle)} idle submission sessions: {checked.stderr}"
            )
        try:
            assert deliver(ports.smtp, "friend@remote.test", ["alice@example.com"], "flood") == {}
            wait_for_subject(mail, ports.imap, "alice@example.com", "flood", timeout=20)
        except (AssertionError, OSError) as exc:
            problems.append(f"MX/IMAP under load: {exc!r}"[:500])
        if vm_rss(worker) >= RSS_BOUND:
            problems.append(f"worker VmRSS {vm_rss(worker) / MiB:.1f} MiB after the checks")
        # one more from a fresh address is turned away while the 200 are held
        extra, ok = sieve_connection(ports.managesieve, "127.0.0.200")
        sockets.append(extra)
        if ok:
            problems.append("a 201st ManageSieve connection was served")
    finally:
        for sock in sockets:
            sock.close()
    # the places are free again once the floods are gone
    deadline = time.monotonic() + 10
    while True:
        sock, ok = sieve_connection(ports.managesieve, "127.0.0.2")
        sock.close()
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if not ok:
        problems.append("ManageSieve still turns clients away after the flood ended")
    assert problems == []
