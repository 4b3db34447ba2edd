"""Secrets stay secret: a full run of each profile with distinctive secret values.

The relay with RELAYHOST_PASSWORD, the relay with XOAUTH2 (client secret, access and
refresh tokens, and the tokens the endpoint hands out while running), and the server
profile with RELAYHOST_PASSWORD (SQLite has no database password) and a user's password.
While mail flows through each, a watcher reads /proc every few milliseconds: no value
(nor its base64 or URL-encoded form) may appear in a log line, in any process's argv, or
in the environment of any process the supervisor started or their children. The
supervisor itself was handed the variables and keeps them (printed, not asserted).
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import smtplib
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import (
    Relay,
    base_env,
    message,
    running_relay,
    smtp_sink,
    wait_for,
)
from tests.security.harness import process_tree, read_proc, server_profile
from tests.server.mailserver import Ports, deliver, wait_for_subject
from tests.server.server_harness import LoopThread
from tests.xoauth2.servers import (
    USERNAME,
    RelayServer,
    TokenServer,
    xoauth2_relay_env,
)

RELAY_USER = "relay-user"


def distinctive(what: str) -> str:
    return f"{what}-{secrets.token_hex(10)}-Zq9"


def forms(secret: str) -> set[bytes]:
    """The value as it could leak: itself, URL-encoded, and base64 at any alignment (the
    middle of the encoding, which does not depend on what surrounds the value)."""
    raw = secret.encode()
    found = {raw, urllib.parse.quote(secret, safe="").encode()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        core = encoded[4 if shift else 0 : -4]
        if len(core) >= 8:
            found.add(core)
    return found


@dataclass
class Watch:
    """Reads argv and environment of every process under `top` until stopped; `values`
    says what to look for (it may grow while the daemons run: refreshed tokens)."""

    top: int
    values: Callable[[], list[str]]
    leaks: set[str] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)
    supervisor_environ: set[str] = field(default_factory=set)
    rounds: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def scan(self) -> None:
        patterns = [(s, f) for s in self.values() for f in forms(s)]
        for pid in process_tree(self.top):
            self.seen.add(pid)
            argv = read_proc(pid, "cmdline")
            environ = read_proc(pid, "environ")
            name = read_proc(pid, "comm").decode(errors="replace").strip()
            for secret, form in patterns:
                if form in argv:
                    self.leaks.add(f"argv of {pid} ({name}): {secret}")
                if form in environ:
                    if pid == self.top:
                        self.supervisor_environ.add(secret)
                    else:
                        self.leaks.add(f"environment of {pid} ({name}): {secret}")
        self.rounds += 1

    def run(self) -> None:
        while not self._stop.wait(0.01):
            self.scan()

    @contextlib.contextmanager
    def running(self) -> Iterator[Watch]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(10)
            self.scan()


def all_argv_leaks(values: list[str]) -> list[str]:
    """Any process on the machine with a value in its argv."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = read_proc(int(entry.name), "cmdline")
            found += [f"{entry.name}: {v}" for v in values if any(f in argv for f in forms(v))]
    return found


def log_leaks(log: str, values: list[str]) -> list[str]:
    data = log.encode()
    return [v for v in values if any(f in data for f in forms(v))]


def check(daemon: Relay, watch: Watch) -> None:
    values = watch.values()
    print(
        f"watched {len(watch.seen)} processes in {watch.rounds} scans; the supervisor's own "
        f"environment holds {len(watch.supervisor_environ)} of {len(values)} values"
    )
    assert watch.rounds >= 3
    assert sorted(watch.leaks) == []
    assert log_leaks(daemon.log, values) == []
    assert all_argv_leaks(values) == []


def test_relay_password_stays_secret(root: Path, port: int) -> None:
    password = distinctive("relay-pw")
    with smtp_sink(credentials=(RELAY_USER, password)) as sink:
        env = base_env(
            root,
            port,
            ALLOWED_SENDER_DOMAINS="example.com",
            RELAYHOST=f"[127.0.0.1]:{sink.port}",
            RELAYHOST_USERNAME=RELAY_USER,
            RELAYHOST_PASSWORD=password,
            POSTFIX_smtp_sasl_security_options="noanonymous",  # the sink has no TLS
        )
        with running_relay(root, env) as relay:
            assert relay.proc is not None
            with Watch(relay.proc.pid, lambda: [password]).running() as watch:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    for n in range(3):
                        rcpt = f"n{n}@example.net"
                        client.sendmail("app@example.com", [rcpt], message("app@example.com", rcpt))
                sink.wait_messages(3)
            assert (RELAY_USER, password) in sink.auth_seen  # the secret was really used
            check(relay, watch)


def test_xoauth2_secrets_stay_secret(root: Path, port: int) -> None:
    loop = LoopThread()
    tokens = TokenServer()
    tokens.rotate = True  # a refresh hands out a new refresh token too
    upstream = RelayServer(tokens)
    try:
        loop.run(tokens.start())
        loop.run(upstream.start())
        issued = tokens.issue(lifetime=-60)  # expired: the worker must use the client secret
        env = xoauth2_relay_env(root, port, tokens, upstream, issued)
        with running_relay(root, env) as relay:
            assert relay.proc is not None
            config = root / "run/mailstack/xoauth2.json"
            hop_password = json.loads(config.read_text()).get("client_password") or ""

            def values() -> list[str]:
                while True:
                    with contextlib.suppress(RuntimeError):  # changed while we read it
                        return sorted(tokens.secrets_seen() | {hop_password} - {""})

            with Watch(relay.proc.pid, values).running() as watch:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    for n in range(3):
                        rcpt = f"n{n}@example.net"
                        client.sendmail("app@example.com", [rcpt], message("app@example.com", rcpt))
                wait_for(lambda: len(upstream.received) >= 3, 30, "delivery upstream")
            assert tokens.granted >= 1  # the client secret went to the endpoint
            assert config.stat().st_mode & 0o777 == 0o600
            token_file = root / "var/spool/postfix/xoauth2-tokens" / USERNAME
            assert token_file.stat().st_mode & 0o777 == 0o600
            check(relay, watch)
    finally:
        loop.run(upstream.stop())
        loop.run(tokens.stop())
        loop.close()


def test_server_relay_and_user_passwords_stay_secret() -> None:
    password = distinctive("relay-pw")
    user_password = distinctive("user-pw")
    ports = Ports()
    with (
        smtp_sink(credentials=(RELAY_USER, password)) as sink,
        server_profile(
            ports,
            password=user_password,
            RELAYHOST=f"[127.0.0.1]:{sink.port}",
            RELAYHOST_USERNAME=RELAY_USER,
            RELAYHOST_PASSWORD=password,
            POSTFIX_smtp_sasl_security_options="noanonymous",
        ) as server,
    ):
        assert server.proc is not None
        values = [password, user_password]
        with Watch(server.proc.pid, lambda: values).running() as watch:
            with smtplib.SMTP("127.0.0.1", ports.submission, timeout=30) as client:
                client.starttls(context=server.tls_context())
                client.login("alice@example.com", user_password)
                for n in range(2):
                    rcpt = f"friend{n}@elsewhere.test"
                    client.sendmail("alice@example.com", [rcpt], message("alice@example.com", rcpt))
            sink.wait_messages(2)
            assert deliver(ports.smtp, "friend@remote.test", ["bob@example.com"], "in") == {}
            wait_for_subject(server, ports.imap, "bob@example.com", "in", password=user_password)
        assert (RELAY_USER, password) in sink.auth_seen
        check(server, watch)
