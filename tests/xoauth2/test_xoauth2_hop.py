"""The hop against a real token endpoint and a real XOAUTH2 relay, driven by a real client."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from mailstack.xoauth2 import MICROSOFT_SCOPE, InitialTokens
from tests.helpers import eventually

from .client import HopFactory, deliver
from .files import expired, file_mode, read_bytes, read_json, remove, write_tokens
from .servers import USERNAME, RelayServer, TokenServer

LOGGER = "mailstack.xoauth2"


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(LOGGER) and r.levelno >= logging.WARNING
    ]


def assert_no_secrets(caplog: pytest.LogCaptureFixture, token_server: TokenServer) -> None:
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in token_server.secrets_seen():
        assert secret not in text


async def test_valid_token_is_used_and_mail_delivered(
    start_hop: HopFactory, token_server: TokenServer, relay: RelayServer, token_file: Path
) -> None:
    """A fresh token in the file goes straight into AUTH XOAUTH2; no refresh happens."""
    issued = token_server.issue()
    write_tokens(token_file, issued)
    hop = await start_hop()

    outcome = await deliver(hop.port)

    assert outcome.mail == 250
    assert outcome.delivered, outcome.texts
    assert [(a.user, a.token, a.ok) for a in relay.auths] == [(USERNAME, issued.access_token, True)]
    assert token_server.requests == []
    [received] = relay.received
    assert received.mail_from == "app@example.org"
    assert received.rcpt_tos == ["someone@example.net"]
    assert received.auth_user == USERNAME
    assert b"Hello through the hop." in received.content
    assert b"\r\n.leading dot survives" in received.content


async def test_expired_token_is_refreshed_saved_and_reused(
    start_hop: HopFactory, token_server: TokenServer, relay: RelayServer, token_file: Path
) -> None:
    """An expired access token is refreshed once, saved 0600, and a new hop reuses it."""
    old = token_server.issue()
    write_tokens(token_file, expired(old))
    hop = await start_hop()

    assert (await deliver(hop.port)).delivered
    assert token_server.granted == 1
    request = token_server.requests[0]
    assert request["grant_type"] == "refresh_token"
    assert request["refresh_token"] == old.refresh_token
    assert "scope" not in request
    saved = read_json(token_file)
    assert saved["refresh_token"] == old.refresh_token
    assert saved["access_token"] != old.access_token
    assert relay.auths[-1].token == saved["access_token"]
    assert file_mode(token_file) == 0o600
    await hop.stop()

    second = await start_hop()
    assert (await deliver(second.port)).delivered
    assert token_server.granted == 1
    assert relay.auths[-1].token == saved["access_token"]


async def test_rotated_refresh_token_is_kept(
    start_hop: HopFactory, token_server: TokenServer, token_file: Path
) -> None:
    """When the endpoint rotates the refresh token, the new one replaces the old in the file."""
    token_server.rotate = True
    old = token_server.issue()
    write_tokens(token_file, expired(old))
    hop = await start_hop(scope=MICROSOFT_SCOPE)

    assert (await deliver(hop.port)).delivered

    saved = read_json(token_file)
    assert saved["refresh_token"] != old.refresh_token
    assert saved["refresh_token"] in token_server.refresh
    assert token_server.requests[0]["scope"] == MICROSOFT_SCOPE


async def test_revoked_refresh_token_defers_until_the_file_is_fixed(
    start_hop: HopFactory,
    token_server: TokenServer,
    relay: RelayServer,
    token_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """invalid_grant gives a 4xx and one secret-free log line; a fixed file delivers."""
    caplog.set_level(logging.DEBUG)
    revoked = token_server.issue()
    token_server.refresh.discard(revoked.refresh_token)
    write_tokens(token_file, expired(revoked))
    hop = await start_hop()

    outcome = await deliver(hop.port)

    assert outcome.mail == 454, outcome.texts
    assert relay.received == []
    assert relay.auths == []
    [line] = failure_lines(caplog)
    assert "invalid_grant" in line
    assert "Token has been expired or revoked." in line
    assert str(token_file) in line or USERNAME in line
    assert_no_secrets(caplog, token_server)

    # The refusal is remembered: no second request until the file changes.
    assert (await deliver(hop.port)).mail == 454
    assert len(token_server.requests) == 1

    write_tokens(token_file, expired(token_server.issue()))
    outcome = await deliver(hop.port)
    assert outcome.delivered, outcome.texts
    assert len(relay.received) == 1


async def test_endpoint_down_defers_then_delivers_when_back(
    start_hop: HopFactory,
    token_server: TokenServer,
    relay: RelayServer,
    token_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connection refused and HTTP 503 both give 451; the next try after recovery delivers."""
    write_tokens(token_file, expired(token_server.issue()))
    hop = await start_hop()

    await token_server.stop()
    refused = await deliver(hop.port)
    assert refused.mail == 451, refused.texts
    assert "4.4.1" in refused.texts[0]

    await token_server.start()
    token_server.status = 503
    unavailable = await deliver(hop.port)
    assert unavailable.mail == 451, unavailable.texts

    token_server.status = None
    assert (await deliver(hop.port)).delivered
    assert len(relay.received) == 1
    lines = failure_lines(caplog)
    assert len(lines) == 2
    assert "cannot reach token endpoint" in lines[0]
    assert "HTTP 503" in lines[1]
    assert_no_secrets(caplog, token_server)


async def test_rejected_recipient_gets_its_own_550(
    start_hop: HopFactory, token_server: TokenServer, relay: RelayServer, token_file: Path
) -> None:
    """Only the refused RCPT gets 550; the message reaches the relay for the other one."""
    write_tokens(token_file, token_server.issue())
    relay.reject.add("nobody@example.net")
    hop = await start_hop()

    outcome = await deliver(hop.port, ["someone@example.net", "nobody@example.net"])

    assert outcome.rcpt == {"someone@example.net": 250, "nobody@example.net": 550}
    assert outcome.delivered
    assert "5.1.1" in outcome.texts[2]
    [received] = relay.received
    assert received.rcpt_tos == ["someone@example.net"]


async def test_concurrent_deliveries_share_one_refresh(
    start_hop: HopFactory, token_server: TokenServer, relay: RelayServer, token_file: Path
) -> None:
    """Five deliveries needing a refresh at once make exactly one token request."""
    write_tokens(token_file, expired(token_server.issue()))
    token_server.gate = asyncio.Event()
    hop = await start_hop()

    sends = [asyncio.create_task(deliver(hop.port)) for _ in range(5)]
    try:
        await eventually(
            lambda: hop.tokens.waiting == 5 and token_server.pending == 1,
            what="5 deliveries waiting on one held refresh",
        )
        token_server.gate.set()
        outcomes = await asyncio.gather(*sends)
    finally:
        token_server.gate.set()
        for task in sends:
            task.cancel()
        await asyncio.gather(*sends, return_exceptions=True)

    assert all(o.delivered for o in outcomes), [o.texts for o in outcomes]
    assert len(token_server.requests) == 1
    assert len(relay.received) == 5


async def test_token_refused_by_relay_forces_one_refresh(
    start_hop: HopFactory, token_server: TokenServer, relay: RelayServer, token_file: Path
) -> None:
    """A token revoked before its expiry is refreshed once on AUTH failure, then it works."""
    issued = token_server.issue()
    write_tokens(token_file, issued)
    del token_server.access[issued.access_token]  # revoked early, the file still trusts it
    hop = await start_hop()

    assert (await deliver(hop.port)).delivered

    assert [a.ok for a in relay.auths] == [False, True]
    assert token_server.granted == 1


async def test_auth_failure_logs_redacted_trace_when_asked(
    start_hop: HopFactory,
    token_server: TokenServer,
    relay: RelayServer,
    token_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The relay refusing every token: 454, and with full_trace the conversation, no token."""
    caplog.set_level(logging.DEBUG)
    write_tokens(token_file, token_server.issue())
    relay.username = "someone.else@example.com"  # every AUTH fails
    hop = await start_hop(full_trace=True)

    outcome = await deliver(hop.port)

    assert outcome.mail == 454, outcome.texts
    assert [a.ok for a in relay.auths] == [False, False]
    [line] = failure_lines(caplog)
    assert "rejected AUTH XOAUTH2" in line
    assert '"status": "400"' in line
    trace = [r.getMessage() for r in caplog.records if "xoauth2 trace" in r.getMessage()]
    assert any("AUTH XOAUTH2 (user=" in t for t in trace)
    assert any("535" in t for t in trace)
    assert_no_secrets(caplog, token_server)


async def test_initial_tokens_never_overwrite_an_existing_file(
    start_hop: HopFactory, token_server: TokenServer, relay: RelayServer, token_file: Path
) -> None:
    """An existing token file wins over XOAUTH2_INITIAL_*, which only seed a missing one."""
    current = token_server.issue()
    write_tokens(token_file, current)
    before = read_bytes(token_file)
    stale = InitialTokens("at-stale-initial", "rt-stale-initial")
    hop = await start_hop(initial_tokens=stale)

    assert read_bytes(token_file) == before
    assert (await deliver(hop.port)).delivered
    assert relay.auths[-1].token == current.access_token
    await hop.stop()

    remove(token_file)
    seed = token_server.issue()
    hop = await start_hop(initial_tokens=InitialTokens(seed.access_token, seed.refresh_token))
    assert read_json(token_file)["refresh_token"] == seed.refresh_token
    assert file_mode(token_file) == 0o600
    assert (await deliver(hop.port)).delivered
    assert token_server.requests[-1]["refresh_token"] == seed.refresh_token


async def test_missing_token_file_defers(
    start_hop: HopFactory, relay: RelayServer, caplog: pytest.LogCaptureFixture
) -> None:
    """No file and no initial tokens: the hop still starts, and mail waits with a 454."""
    hop = await start_hop()

    outcome = await deliver(hop.port)

    assert outcome.mail == 454
    assert any("does not exist" in line for line in failure_lines(caplog))
    assert relay.received == []
