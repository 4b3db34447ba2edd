"""Shared test helpers: free ports, private roots, an SMTP sink, and a running relay."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

MAILSTACK = [sys.executable, "-m", "mailstack"]


#: Ports handed out by `free_port`: below Linux's ephemeral range (32768-60999), where the
#: kernel picks ports for `bind(port 0)` and for outgoing connections, in one block per
#: pytest-xdist worker (gw0, gw1, ...; a serial run is gw0) so that two workers never hand
#: out the same port, even for a daemon that a test stops and starts again on its port.
FIRST_TEST_PORT = 20000
PORTS_PER_WORKER = 500
WORKER_BLOCKS = (32768 - FIRST_TEST_PORT) // PORTS_PER_WORKER
_port_lock = threading.Lock()
_port_cycle: Iterator[int] | None = None


def worker_ports() -> range:
    """This test process's own block of ports (PYTEST_XDIST_WORKER names the worker)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    # a worker that replaces a crashed one gets the next number: wrap around (the ports are
    # still checked before they are handed out)
    index = int(worker.removeprefix("gw")) % WORKER_BLOCKS
    start = FIRST_TEST_PORT + index * PORTS_PER_WORKER
    return range(start, start + PORTS_PER_WORKER)


def _is_free(host: str, port: int) -> bool:
    """Nothing listens on, or lingers at, `port` over TCP or UDP (name servers take both)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port of this worker's block that is free now; the next call hands out the next one,
    so a port just released (and maybe still in TIME_WAIT) is not handed out again soon."""
    global _port_cycle
    with _port_lock:
        if _port_cycle is None:
            block = worker_ports()
            start = random.randrange(len(block))  # a child process starts elsewhere
            _port_cycle = itertools.cycle([*block[start:], *block[:start]])
        for _ in range(PORTS_PER_WORKER):
            port = next(_port_cycle)
            if _is_free(host, port):
                return port
    raise AssertionError(f"no free port left in {worker_ports()}")


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """`wait_for` for coroutines: poll `check` (plain or awaitable) without blocking the
    event loop; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.contextmanager
def private_root() -> Iterator[Path]:
    """A MAILSTACK_ROOT the postfix and opendkim users can enter (pytest's tmp_path is 0700)."""
    base = os.environ.get("MAILSTACK_TEST_DIR", "/var/tmp")
    root = Path(tempfile.mkdtemp(prefix="mailstack-test-", dir=base))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Sink:
    """An upstream relay host on loopback that records what it receives."""

    port: int
    messages: list[tuple[Envelope, Message]] = field(default_factory=list)
    auth_seen: list[tuple[str, str]] = field(default_factory=list)

    def wait_messages(self, count: int, timeout: float = 30) -> list[tuple[Envelope, Message]]:
        wait_for(lambda: len(self.messages) >= count, timeout, f"{count} message(s) at the sink")
        return self.messages


class _Handler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: object, session: object, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        self.sink.messages.append((envelope, message_from_bytes(content)))
        return "250 2.0.0 accepted by sink"


@contextlib.contextmanager
def smtp_sink(
    port: int | None = None, credentials: tuple[str, str] | None = None
) -> Iterator[Sink]:
    """Run a sink; with `credentials` it requires AUTH PLAIN/LOGIN with that user/password."""
    sink = Sink(port or free_port())
    kwargs: dict[str, object] = {}
    if credentials is not None:

        def authenticator(
            server: object, session: object, envelope: object, mechanism: str, data: object
        ) -> AuthResult:
            assert isinstance(data, LoginPassword)
            user, password = data.login.decode(), data.password.decode()
            sink.auth_seen.append((user, password))
            return AuthResult(success=(user, password) == credentials, handled=False)

        kwargs = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
    controller = Controller(_Handler(sink), hostname="127.0.0.1", port=sink.port, **kwargs)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def base_env(root: Path, submission_port: int, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "MAILSTACK_ROOT": str(root),
        "MAILSTACK_LISTEN_SUBMISSION": f"127.0.0.1:{submission_port}",
        "MAILSTACK_LISTEN_SMTP": "",
        "POSTFIX_myhostname": "relay.mailstack.test",
        "MAILSTACK_STOP_TIMEOUT": "5",
    }
    if "VIRTUAL_ENV" in os.environ:
        env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
    env.update(extra)
    return env


class Relay:
    """`mailstack run` as a child process, its log in a file, stopped however a test ends."""

    def __init__(self, root: Path, env: dict[str, str], launcher: Sequence[str] = ()) -> None:
        self.root = root
        self.env = env
        self.launcher = list(launcher)  # argv to run `mailstack run` under (a namespace)
        self.port = int(env["MAILSTACK_LISTEN_SUBMISSION"].rsplit(":", 1)[1])
        self.log_path = root / f"mailstack-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, wait: bool = True, timeout: float = 30) -> Relay:
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [*self.launcher, *MAILSTACK, "run"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if wait:
            wait_for(self._ready, timeout, f"relay on port {self.port}\n{self.log}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"mailstack exited with {self.proc.returncode}:\n{self.log}")
        return "ready: accepting mail" in self.log

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        """Kill anything still running from this root (only matters when a test failed)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        for pidfile in (
            self.root / "var/spool/postfix/pid/master.pid",
            self.root / "run/mailstack/opendkim/opendkim.pid",
        ):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().split()[0])
                if _is_ours(pid, self.root):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL) if pidfile.name == "master.pid" else os.kill(
                            pid, signal.SIGKILL
                        )

    def postconf(self, *args: str) -> str:
        return subprocess.run(
            ["postconf", "-c", str(self.root / "etc/postfix"), *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def queue_ids(self, queue: str = "deferred") -> list[str]:
        folder = self.root / "var/spool/postfix" / queue
        return sorted(p.name for p in folder.rglob("*") if p.is_file())


def _is_ours(pid: int, root: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(root).encode() in cmdline


@contextlib.contextmanager
def running_relay(root: Path, env: dict[str, str], launcher: Sequence[str] = ()) -> Iterator[Relay]:
    relay = Relay(root, env, launcher)
    try:
        yield relay.start()
    finally:
        with contextlib.suppress(Exception):
            relay.stop()
        relay.cleanup()


def message(sender: str, recipient: str, subject: str = "hello", extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"Date: Sat, 21 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{time.monotonic_ns()}@test>\r\n"
        f"{extra}\r\nThis is the body.\r\n"
    ).encode()


def verify_dkim(raw: bytes, keys_dir: Path) -> bool:
    """Verify with dkimpy, answering the DNS query from the `<domain>.txt` files."""
    import dkim

    from mailstack.dkim.keys import parse_txt

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        selector, _, domain = name.decode().rstrip(".").partition("._domainkey.")
        txt = keys_dir / f"{domain}.txt"
        assert txt.exists(), f"no key published for {domain} (asked for {name!r})"
        record = parse_txt(txt.read_text())
        assert selector, name
        return record.encode()

    return bool(dkim.verify(raw, dnsfunc=dnsfunc))


def smtp_outcome(client: smtplib.SMTP, sender: str, recipient: str, data: bytes) -> tuple[int, str]:
    """Send one message; (250, "") when the server took it, else the refusal's code and text
    (at MAIL, RCPT or DATA)."""
    try:
        client.sendmail(sender, [recipient], data)
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error.decode(errors="replace")
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = exc.recipients[recipient]
        return code, text.decode(errors="replace")
    return 250, ""


@contextlib.contextmanager
def nxdomain_resolver() -> Iterator[str]:
    """A DNS server on a loopback port that answers every question at once with NXDOMAIN:
    daemons that look names up (rspamd's SPF, DKIM and DMARC checks) get a quick, definite
    answer on a machine without DNS. Yields `127.0.0.1:PORT`; stopped when the block ends."""
    import dns.exception
    import dns.message
    import dns.rcode

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stopping = threading.Event()

    def answer() -> None:
        while not stopping.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(dns.exception.DNSException):  # not DNS: no answer
                reply = dns.message.make_response(dns.message.from_wire(data))
                reply.set_rcode(dns.rcode.NXDOMAIN)
                sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join(5)
        sock.close()
