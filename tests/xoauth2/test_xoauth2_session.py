"""SMTP session behaviour of the hop: reuse, null sender, relay outages, syslog."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import aiosmtplib
import pytest

from tests.helpers import eventually

from .client import MESSAGE, HopFactory, deliver
from .files import write_tokens
from .servers import RelayServer, TokenServer


async def test_one_session_several_messages_one_auth(
    start_hop: HopFactory, token_server: TokenServer, relay: RelayServer, token_file: Path
) -> None:
    """Postfix's connection cache sends several messages per session; one AUTH serves them."""
    write_tokens(token_file, token_server.issue())
    hop = await start_hop()

    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=hop.port, start_tls=False) as client:
        for n in range(3):
            errors, _ = await client.sendmail("app@example.org", [f"r{n}@example.net"], MESSAGE)
            assert errors == {}
            await client.rset()

    assert len(relay.received) == 3
    assert [a.ok for a in relay.auths] == [True]


async def test_null_sender_passes_through(
    start_hop: HopFactory, token_server: TokenServer, relay: RelayServer, token_file: Path
) -> None:
    """Bounces (MAIL FROM:<>) are relayed with the null sender intact."""
    write_tokens(token_file, token_server.issue())
    hop = await start_hop()

    assert (await deliver(hop.port, sender="")).delivered
    assert relay.received[0].mail_from == "<>"


async def test_relay_down_defers_then_delivers(
    start_hop: HopFactory, token_server: TokenServer, relay: RelayServer, token_file: Path
) -> None:
    """A relay host that refuses connections gives 451 4.4.1; once it is back, mail flows."""
    write_tokens(token_file, token_server.issue())
    hop = await start_hop()
    port = relay.port
    await relay.stop()

    outcome = await deliver(hop.port)
    assert outcome.mail == 451, outcome.texts
    assert "4.4.1" in outcome.texts[0]

    relay.port = port
    await relay.start(port)
    assert (await deliver(hop.port)).delivered


async def test_relay_dropping_the_connection_mid_transaction_defers(
    start_hop: HopFactory, token_server: TokenServer, relay: RelayServer, token_file: Path
) -> None:
    """If the relay host goes away after RCPT, DATA gets a 4xx, never a 2xx."""
    write_tokens(token_file, token_server.issue())
    hop = await start_hop()

    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=hop.port, start_tls=False) as client:
        await client.mail("app@example.org")
        await client.rcpt("someone@example.net")
        await relay.stop()
        with pytest.raises(aiosmtplib.SMTPResponseException) as failure:
            await client.data(MESSAGE)
    assert 400 <= failure.value.code < 500
    assert relay.received == []


SyslogRead = Callable[[], bytes | None]


@pytest.fixture(params=[socket.SOCK_DGRAM, socket.SOCK_STREAM], ids=["datagram", "stream"])
def syslog_socket(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, SyslogRead]]:
    """A syslog socket of either kind (mailstack's own receiver is a stream) and a reader
    that returns what arrived, or None."""
    path = str(tmp_path / "log")
    sock = socket.socket(socket.AF_UNIX, request.param)
    sock.bind(path)
    sock.setblocking(False)
    if request.param == socket.SOCK_STREAM:
        sock.listen(1)
    conns: list[socket.socket] = []

    def read() -> bytes | None:
        try:
            if request.param == socket.SOCK_DGRAM:
                return sock.recv(4096)
            if not conns:
                conns.append(sock.accept()[0])
            return conns[0].recv(4096) or None
        except BlockingIOError:
            return None

    try:
        yield path, read
    finally:
        for conn in conns:
            conn.close()
        sock.close()


async def test_syslog_on_failure_sends_the_failure_line(
    start_hop: HopFactory,
    token_server: TokenServer,
    token_file: Path,
    syslog_socket: tuple[str, SyslogRead],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """XOAUTH2_SYSLOG_ON_FAILURE: the failure line also reaches syslog, still without secrets."""
    caplog.set_level(logging.WARNING)
    path, read = syslog_socket
    revoked = token_server.issue()
    token_server.refresh.clear()
    write_tokens(token_file, revoked, expiry=0)
    hop = await start_hop(syslog_on_failure=True, syslog_address=path)

    assert (await deliver(hop.port)).mail == 454

    received: list[bytes] = []

    def got_line() -> bool:
        data = read()
        if data is not None:
            received.append(data)
        return data is not None

    await eventually(got_line, what="a syslog message")
    line = received[0].decode()
    assert line.startswith("<20>")  # facility mail, severity warning
    assert "invalid_grant" in line
    for secret in token_server.secrets_seen():
        assert secret not in line
