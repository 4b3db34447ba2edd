"""XOAUTH2 end to end: a real Postfix relays through mailstack's hop to an OAuth2 relay host."""

from __future__ import annotations

import asyncio
import json
import smtplib
import subprocess
from pathlib import Path

from tests.helpers import MAILSTACK, Relay, base_env, eventually, free_port, message
from tests.xoauth2.servers import (
    CLIENT_ID,
    CLIENT_SECRET,
    USERNAME,
    RelayServer,
    TokenServer,
    xoauth2_relay_env,
)


def _send(port: int, recipients: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("app@example.com", recipients, message("app@example.com", recipients[0]))


async def test_postfix_relays_through_xoauth2(root: Path, port: int) -> None:
    """Valid token: delivered with AUTH XOAUTH2; a 550 for one recipient bounces only it;
    a revoked refresh token defers (never bounces) with one clear line; no secret is logged."""
    tokens = TokenServer()
    await tokens.start()
    upstream = RelayServer(tokens, reject={"refused@example.net"})
    await upstream.start()
    issued = tokens.issue()
    env = xoauth2_relay_env(root, port, tokens, upstream, issued)
    relay = Relay(root, env)
    try:
        await asyncio.to_thread(relay.start)
        await asyncio.to_thread(_send, port, ["ok@example.net", "refused@example.net"])
        # The bounce notice for the refused recipient also travels upstream, to the sender.
        await eventually(lambda: len(upstream.received) >= 1, 30, "delivery upstream")
        await eventually(lambda: "status=bounced" in relay.log, 30, "the bounce of one recipient")
        delivered = [m for m in upstream.received if m.mail_from == "app@example.com"]
        assert [m.rcpt_tos for m in delivered] == [["ok@example.net"]]
        assert upstream.auths[0].user == USERNAME
        assert upstream.auths[-1].ok
        assert upstream.auths[-1].token in tokens.access, "a token the endpoint issued"
        bounced = [line for line in relay.log.splitlines() if "status=bounced" in line]
        assert len(bounced) == 1
        assert "refused@example.net" in bounced[0]

        tokens.refresh.clear()  # the user revoked the app
        tokens.access.clear()
        await asyncio.to_thread(_send, port, ["later@example.net"])
        await eventually(lambda: "status=deferred" in relay.log, 30, "a deferral")
        assert not [
            line
            for line in relay.log.splitlines()
            if "later@example.net" in line and "status=bounced" in line
        ]
        # smtp logs the deferral before qmgr moves the file into the deferred queue.
        await eventually(lambda: bool(relay.queue_ids("deferred")), 10, "the deferred queue")
        for secret in (CLIENT_SECRET, issued.access_token, issued.refresh_token):
            assert secret not in relay.log
        assert await asyncio.to_thread(relay.stop) == 0
    finally:
        relay.cleanup()
        await upstream.stop()
        await tokens.stop()


async def test_refreshed_token_survives_restart_and_secrets_from_files(
    root: Path, port: int
) -> None:
    """Secrets from *_FILE; the expired initial token is refreshed once, written to the token
    file (0600), and a restarted relay delivers with it without asking the endpoint again."""
    tokens = TokenServer()
    await tokens.start()
    upstream = RelayServer(tokens)
    await upstream.start()
    issued = tokens.issue(lifetime=-60)  # already expired
    secrets = root / "secrets"
    secrets.mkdir()
    for name, value in (
        ("secret", CLIENT_SECRET),
        ("refresh", issued.refresh_token),
        ("access", issued.access_token),
    ):
        (secrets / name).write_text(value + "\n")
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        RELAYHOST=f"[127.0.0.1]:{upstream.port}",
        RELAYHOST_USERNAME=USERNAME,
        POSTFIX_smtp_tls_security_level="none",
        XOAUTH2_CLIENT_ID=CLIENT_ID,
        XOAUTH2_SECRET_FILE=str(secrets / "secret"),
        XOAUTH2_TOKEN_ENDPOINT=tokens.url,
        XOAUTH2_INITIAL_ACCESS_TOKEN_FILE=str(secrets / "access"),
        XOAUTH2_INITIAL_REFRESH_TOKEN_FILE=str(secrets / "refresh"),
        MAILSTACK_XOAUTH2_PORT=str(free_port()),
    )
    token_file = root / "var/spool/postfix/xoauth2-tokens" / USERNAME
    try:
        for attempt in (1, 2):
            relay = Relay(root, env)
            try:
                await asyncio.to_thread(relay.start)
                await asyncio.to_thread(_send, port, [f"n{attempt}@example.net"])
                await eventually(lambda n=attempt: len(upstream.received) >= n, 30, "delivery")
                assert await asyncio.to_thread(relay.stop) == 0
            finally:
                relay.cleanup()
            stored = json.loads(token_file.read_text())
            assert stored["access_token"] != issued.access_token
            assert stored["access_token"] in tokens.access
            assert token_file.stat().st_mode & 0o777 == 0o600
            assert CLIENT_SECRET not in relay.log
        assert tokens.granted == 1, "the restart reused the refreshed token"
        assert [a.token for a in upstream.auths if a.ok] == [stored["access_token"]] * 2
    finally:
        await upstream.stop()
        await tokens.stop()


def test_xoauth2_without_username_is_refused(root: Path, port: int) -> None:
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        RELAYHOST="[127.0.0.1]:2525",
        XOAUTH2_CLIENT_ID=CLIENT_ID,
    )
    result = subprocess.run(
        [*MAILSTACK, "check"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 78
    assert "error: XOAUTH2_CLIENT_ID: XOAUTH2 needs RELAYHOST and RELAYHOST_USERNAME" in (
        result.stderr
    )


async def test_only_postfix_may_use_the_hop_and_big_messages_are_refused(
    root: Path, port: int
) -> None:
    """Another local process reaching the hop's loopback port cannot send as the account
    (530 without the per-start password, 535 with a wrong one); Postfix can; a message over
    the size limit is refused at DATA (552), not held in memory."""
    tokens = TokenServer()
    await tokens.start()
    upstream = RelayServer(tokens)
    await upstream.start()
    issued = tokens.issue()
    hop_port = free_port()
    env = xoauth2_relay_env(
        root,
        port,
        tokens,
        upstream,
        issued,
        POSTFIX_message_size_limit="200000",
        MAILSTACK_XOAUTH2_PORT=str(hop_port),
    )
    relay = Relay(root, env)

    def intruder() -> tuple[int, int]:
        with smtplib.SMTP("127.0.0.1", hop_port, timeout=30) as hop:
            hop.ehlo("intruder")
            refused, _ = hop.mail("app@example.com")
            wrong, _ = hop.docmd("AUTH", "PLAIN AHBvc3RmaXgAbm90LXRoZS1wYXNzd29yZA==")
            return refused, wrong

    def oversized() -> int:
        line = (root / "etc/postfix/sasl_passwd").read_text().split()[1]
        password = line.split(":", 1)[1]
        with smtplib.SMTP("127.0.0.1", hop_port, timeout=30) as hop:
            hop.login("postfix", password)
            big = message("app@example.com", "big@example.net", "big") + b"x" * 300_000
            try:
                hop.sendmail("app@example.com", ["big@example.net"], big)
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code
            except smtplib.SMTPSenderRefused as exc:
                return exc.smtp_code
        return 250

    try:
        await asyncio.to_thread(relay.start)
        assert await asyncio.to_thread(intruder) == (530, 535)
        await asyncio.to_thread(_send, port, ["ok@example.net"])
        await eventually(lambda: len(upstream.received) >= 1, 30, "Postfix's delivery")
        assert await asyncio.to_thread(oversized) == 552
        assert [m.rcpt_tos for m in upstream.received] == [["ok@example.net"]]
        assert await asyncio.to_thread(relay.stop) == 0
    finally:
        relay.cleanup()
        await upstream.stop()
        await tokens.stop()
