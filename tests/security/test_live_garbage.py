"""Garbage on every listening socket of a running server profile.

One server for the module (loopback ports). Each listener gets random bytes (for the TLS
ports also before the handshake), a line or frame far over any limit, a request cut in
half followed by the end of input, and a valid request written one byte at a time. The
server must not crash (no crash line in the supervisor's log, every process still there),
must close a connection whose input ended mid-request within the timeout, must answer the
slow request, and afterwards every listener answers at once and real mail goes from the MX
to an IMAP mailbox.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailstack.lookup import netstring
from mailstack.milter import protocol as milter
from tests.security.harness import (
    MiB,
    crash_lines,
    daemons,
    server_profile,
    unix_socket,
    vm_rss,
    worker_pid,
)
from tests.server.mailserver import MailServer, Ports, deliver, wait_for_subject

TIMEOUT = 10.0  # seconds any one exchange may take: longer is a hang
SLOW_DELAY = 0.02  # between the bytes of a slow request
HUGE = 1 * MiB
RANDOM_SIZES = (100, 4096, 64 * 1024, 256 * 1024)  # random bytes per connection


@dataclass(frozen=True)
class Target:
    """One listener, and how to talk to it."""

    name: str
    connect: Callable[[], socket.socket]  # connected, TLS set up where the port has TLS
    greeting: bytes | None  # what the server says first (regex), None: the client starts
    request: bytes  # a whole, valid request
    answer: bytes  # what its reply matches (regex)
    half: bytes  # the start of a request
    huge: bytes  # far over the listener's line or frame limit
    plain: Callable[[], socket.socket] | None = None  # raw TCP under a TLS port


@dataclass
class Results:
    """What each exchange did, printed with the test's output."""

    lines: list[str] = field(default_factory=list)
    inputs: int = 0
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, target: Target, kind: str, sent: int, outcome: str) -> None:
        with self.lock:
            self.inputs += 1
            self.sent += sent
            self.lines.append(f"{target.name:12} {kind:14} {sent:>9} bytes  {outcome}")


def tcp(port: int) -> Callable[[], socket.socket]:
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def tls(port: int, context: ssl.SSLContext) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        return context.wrap_socket(tcp(port)(), server_hostname="127.0.0.1")

    return connect


def unix(path: Path) -> Callable[[], socket.socket]:
    return lambda: unix_socket(path, TIMEOUT)


def read_until(sock: socket.socket, pattern: bytes, timeout: float = TIMEOUT) -> bytes:
    """Read until `pattern` matches; AssertionError if the peer closes or stays silent."""
    data = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, data):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(
                f"no {pattern!r} within {timeout} s; got {data[-200:]!r}"
            ) from None
        if not chunk:
            raise AssertionError(f"closed before {pattern!r}; got {data[-200:]!r}")
        data += chunk
    return data


def drain(sock: socket.socket, timeout: float) -> str:
    """Read what the server says until it closes or `timeout` passes: "closed" or "open"."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(OSError, ssl.SSLError):
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not sock.recv(65536):
                    return "closed"
            except TimeoutError:
                return "open"
        return "open"
    return "closed"  # reset by the peer


def send_all(sock: socket.socket, data: bytes) -> str:
    """Send, tolerating a server that hangs up on us half-way (that is its right)."""
    try:
        sock.sendall(data)
    except (OSError, ssl.SSLError) as exc:
        return f"hung up while we sent ({type(exc).__name__})"
    return "sent"


def greet(target: Target, sock: socket.socket) -> None:
    if target.greeting is not None:
        read_until(sock, target.greeting)


def exchange(target: Target, delay: float = 0.0) -> None:
    """A polite request, whole or one byte at a time; the reply must come in time."""
    with target.connect() as sock:
        greet(target, sock)
        if delay:
            for index in range(len(target.request)):
                sock.sendall(target.request[index : index + 1])
                time.sleep(delay)
        else:
            sock.sendall(target.request)
        read_until(sock, target.answer)


def random_bytes(target: Target, results: Results, size: int, *, before_tls: bool) -> None:
    junk = os.urandom(size)
    connect = target.plain if before_tls and target.plain else target.connect
    with connect() as sock:
        sent = send_all(sock, junk)
        kind = "random pre-TLS" if before_tls else "random"
        results.note(target, kind, size, f"{sent}, then {drain(sock, 2)}")


def huge(target: Target, results: Results) -> None:
    with target.connect() as sock:
        greet(target, sock)
        sent = send_all(sock, target.huge)
        results.note(target, "huge", len(target.huge), f"{sent}, then {drain(sock, 2)}")


def half_then_eof(target: Target, results: Results) -> None:
    """The end of input in the middle of a request: the server must close, in time."""
    with target.connect() as sock:
        greet(target, sock)
        sock.sendall(target.half)
        sock.shutdown(socket.SHUT_WR)
        outcome = drain(sock, TIMEOUT)
        results.note(target, "half + EOF", len(target.half), outcome)
        assert outcome == "closed", f"{target.name} kept a half request open past {TIMEOUT} s"


def slowloris(target: Target, results: Results) -> None:
    exchange(target, delay=SLOW_DELAY)
    results.note(target, "byte by byte", len(target.request), "answered")


DICT_HELLO = b"H3\t2\t0\t\tmailstack\n"


def dict_target(name: str, path: Path, prefix: bytes, answer: bytes) -> Target:
    """A Dovecot dict socket: HELLO, then a lookup of alice's key under `prefix`."""
    key = prefix + (b"alice@example.com" if prefix.startswith(b"shared/") else b"active")
    return Target(
        name,
        unix(path),
        greeting=None,
        request=DICT_HELLO + b"L" + key + b"\talice@example.com\n",
        answer=answer,
        half=DICT_HELLO + b"L" + prefix[:-3],
        huge=DICT_HELLO + b"L" + b"k" * HUGE + b"\n",
    )


def targets(server: MailServer, ports: Ports) -> list[Target]:
    context = server.tls_context()
    run = server.root / "run/mailstack"
    smtp = {
        "greeting": rb"^220 .*\r\n",
        "request": b"EHLO slow.example\r\n",
        "answer": rb"(?m)^250 .*\r\n",
        "half": b"MAIL FROM:<half@remo",
        "huge": b"EHLO " + b"a" * HUGE + b"\r\n",
    }
    imap = {
        "greeting": rb"^\* OK.*\r\n",
        "request": b"a1 CAPABILITY\r\n",
        "answer": rb"(?m)^a1 OK.*\r\n",
        "half": b"a1 LOGIN {20}\r\nalice",
        "huge": b"a1 " + b"A" * HUGE + b"\r\n",
    }
    return [
        Target("smtp 25", tcp(ports.smtp), **smtp),
        Target("submission", tcp(ports.submission), **smtp),
        Target(
            "submissions", tls(ports.submissions, context), plain=tcp(ports.submissions), **smtp
        ),
        Target("imap", tcp(ports.imap), **imap),
        Target("imaps", tls(ports.imaps, context), plain=tcp(ports.imaps), **imap),
        Target(
            "managesieve",
            tcp(ports.managesieve),
            greeting=rb"(?m)^OK.*\r\n",
            request=b"CAPABILITY\r\n",
            answer=rb"(?m)^OK.*\r\n",
            half=b'AUTHENTICATE "PLAIN" {40+}\r\nAGFsaWNl',
            huge=b'NOOP "' + b"a" * HUGE + b'"\r\n',
        ),
        Target(
            "socketmap",
            unix(run / "lookup/socketmap.sock"),
            greeting=None,
            request=netstring.encode(b"domain example.com"),
            answer=re.escape(netstring.encode(b"OK example.com")),
            half=b"18:domain exa",
            huge=b"4096:" + b"x" * 4096 + b",4097:" + b"x" * HUGE,
        ),
        dict_target("dict", run / "dict/dict.sock", b"shared/userdb/", rb"^O.*alice.*\n"),
        dict_target("sieve-dict", run / "sieve-dict/dict.sock", b"priv/sieve/name/", rb"^N\n"),
        Target(
            "milter",
            unix(run / "milter/sender.sock"),
            greeting=None,
            request=milter.encode_packet(b"O", bytes.fromhex("00000006000001ff001fffff")),
            answer=rb"(?s)^\x00\x00..O",
            half=milter.encode_packet(b"L", b"From\0x@example.com\0")[:9],
            huge=milter.encode_packet(b"L", b"x" * (milter.DEFAULT_MAX_PACKET - 1)) + b"x" * HUGE,
        ),
    ]


@dataclass
class World:
    server: MailServer
    ports: Ports
    targets: list[Target]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    ports = Ports()
    with server_profile(ports) as server:
        yield World(server, ports, targets(server, ports))


def test_every_listener_answers_before_the_garbage(world: World) -> None:
    for target in world.targets:
        exchange(target)


def test_garbage_on_every_listener_crashes_and_hangs_nothing(world: World) -> None:
    server = world.server
    assert server.proc is not None
    started_daemons = daemons(server.proc.pid)
    assert len(started_daemons) >= 4  # worker, OpenDKIM, Dovecot, Postfix
    worker = worker_pid(server)
    rss_before = vm_rss(worker)
    results = Results()
    jobs: list[Callable[[], None]] = []
    for target in world.targets:
        for size in RANDOM_SIZES:
            jobs.append(lambda t=target, n=size: random_bytes(t, results, n, before_tls=False))
            if target.plain is not None:
                jobs.append(lambda t=target, n=size: random_bytes(t, results, n, before_tls=True))
        jobs.append(lambda t=target: huge(t, results))
        jobs.append(lambda t=target: half_then_eof(t, results))
        jobs.append(lambda t=target: slowloris(t, results))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(job) for job in jobs]
        errors = []
        for future in futures:
            try:
                future.result(timeout=60)
            except Exception as exc:  # noqa: BLE001 - every failure is reported together
                errors.append(repr(exc))
    took = time.monotonic() - started
    rss_after = vm_rss(worker)
    print("\n".join(sorted(results.lines)))
    print(
        f"{results.inputs} garbage inputs, {results.sent / MiB:.1f} MiB in {took:.1f} s; "
        f"worker VmRSS {rss_before / MiB:.1f} -> {rss_after / MiB:.1f} MiB"
    )
    assert not errors, "\n".join(errors)
    # nobody crashed: the log says nothing of it and the daemons are the ones we started
    assert crash_lines(server.log) == [], "\n".join(crash_lines(server.log))
    assert server.proc.poll() is None
    assert worker_pid(server) == worker
    assert daemons(server.proc.pid) == started_daemons
    assert rss_after < 150 * MiB


def test_after_the_garbage_every_listener_answers_and_mail_flows(world: World) -> None:
    for target in world.targets:
        exchange(target)
    assert deliver(world.ports.smtp, "friend@remote.test", ["alice@example.com"], "after") == {}
    wait_for_subject(world.server, world.ports.imap, "alice@example.com", "after")
    assert crash_lines(world.server.log) == []
