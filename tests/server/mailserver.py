"""Run `mailstack run --profile server` as a child process, and talk to it like a user would.

Imported by the server profile tests (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import signal
import smtplib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import Relay, free_port

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Ports:
    smtp: int = field(default_factory=free_port)
    submission: int = field(default_factory=free_port)
    submissions: int = field(default_factory=free_port)
    imap: int = field(default_factory=free_port)
    imaps: int = field(default_factory=free_port)
    managesieve: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    https: int = field(default_factory=free_port)


def server_env(root: Path, ports: Ports, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "MAILSTACK_PROFILE": "server",
        "MAILSTACK_ROOT": str(root),
        "MAILSTACK_LISTEN_SMTP": f"127.0.0.1:{ports.smtp}",
        "MAILSTACK_LISTEN_SUBMISSION": f"127.0.0.1:{ports.submission}",
        "MAILSTACK_LISTEN_SUBMISSIONS": f"127.0.0.1:{ports.submissions}",
        "MAILSTACK_LISTEN_IMAP": f"127.0.0.1:{ports.imap}",
        "MAILSTACK_LISTEN_IMAPS": f"127.0.0.1:{ports.imaps}",
        "MAILSTACK_LISTEN_MANAGESIEVE": f"127.0.0.1:{ports.managesieve}",
        "MAILSTACK_LISTEN_HTTP": f"127.0.0.1:{ports.http}",
        "MAILSTACK_LISTEN_HTTPS": f"127.0.0.1:{ports.https}",
        "POSTFIX_myhostname": "mx.example.com",
        "MAILSTACK_STOP_TIMEOUT": "5",
        # rspamd is tested on its own (test_spam_server.py): the other tests keep the MX
        # free of its cold start and its DNS questions
        "MAILSTACK_SPAM": "off",
    }
    if "VIRTUAL_ENV" in os.environ:
        env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
    env.update(extra)
    return env


def add_user(root: Path, address: str, password: str = PASSWORD) -> None:
    """Create `address` (and its domain) in the store of the server that will run at `root`."""
    from mailstack.store import MailStore

    store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
    try:
        store.add_domain(address.rpartition("@")[2])
        store.add_user(address, password)
    finally:
        store.close()


class MailServer(Relay):
    """The server profile; stopped, with every daemon it started, however a test ends."""

    def cleanup(self) -> None:
        super().cleanup()
        pidfile = self.root / "run/mailstack/dovecot/master.pid"
        with contextlib.suppress(OSError, ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)

    @property
    def database(self) -> Path:
        return self.root / "var/lib/mailstack/mailstack.db"

    @property
    def certificate(self) -> Path:
        return self.root / "etc/mailstack/tls/cert.pem"

    def tls_context(self) -> ssl.SSLContext:
        """Trusts exactly the server's certificate (self-signed, for 127.0.0.1)."""
        return ssl.create_default_context(cafile=str(self.certificate))


@contextlib.contextmanager
def running_server(root: Path, env: dict[str, str]) -> Iterator[MailServer]:
    server = MailServer(root, env)
    try:
        yield server.start(timeout=60)
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        server.cleanup()


def message(sender: str, recipient: str, subject: str, body: str = "Hello.") -> bytes:
    return (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"Date: Sat, 21 Nov 2026 12:00:00 +0000\r\n"
        f"Message-ID: <{time.monotonic_ns()}@test.example>\r\n\r\n{body}\r\n"
    ).encode()


def deliver(port: int, sender: str, recipients: list[str], subject: str) -> dict:
    """Hand a message to the MX as an outside server would; returns refused recipients."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mail.remote.test", timeout=30) as mx:
        return mx.sendmail(sender, recipients, message(sender, recipients[0], subject))


@contextlib.contextmanager
def imap_session(server: MailServer, port: int, user: str, password: str) -> Iterator:
    """IMAP with STARTTLS, as a mail client does on 143."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.starttls(server.tls_context())
        client.login(user, password)
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def subjects(client: imaplib.IMAP4, folder: str = "INBOX") -> list[str]:
    status, _ = client.select(f'"{folder}"', readonly=True)
    assert status == "OK", f"cannot select {folder}"
    _, data = client.search(None, "ALL")
    found = []
    for number in data[0].split():
        _, parts = client.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        header = parts[0][1].decode() if isinstance(parts[0], tuple) else ""
        found.append(header.strip().removeprefix("Subject: "))
    return found


def wait_for_subject(
    server: MailServer,
    port: int,
    user: str,
    subject: str,
    folder: str = "INBOX",
    password: str = PASSWORD,
    timeout: float = 30,
) -> list[str]:
    """Poll the mailbox over IMAP until `subject` is in `folder`; returns its subjects."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        with imap_session(server, port, user, password) as client:
            status, _ = client.select(f'"{folder}"', readonly=True)
            if status == "OK":
                seen = subjects(client, folder)
                if subject in seen:
                    return seen
        time.sleep(0.2)
    raise AssertionError(f"{subject!r} never reached {user}/{folder}; saw {seen}\n{server.log}")
