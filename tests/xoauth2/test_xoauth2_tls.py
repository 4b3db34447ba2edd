"""TLS to the relay host: STARTTLS and implicit TLS, with a throwaway CA from trustme."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from .client import HopFactory, deliver
from .files import write_tokens
from .servers import RelayServer, TokenServer


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
async def tls_relay(ca: trustme.CA, token_server: TokenServer) -> AsyncIterator[RelayServer]:
    server = RelayServer(token_server, tls_context=server_context(ca))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def smtps_relay(ca: trustme.CA, token_server: TokenServer) -> AsyncIterator[RelayServer]:
    server = RelayServer(token_server, tls_context=server_context(ca), implicit_tls=True)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_starttls_before_auth(
    start_hop: HopFactory,
    token_server: TokenServer,
    tls_relay: RelayServer,
    token_file: Path,
    ca_file: Path,
) -> None:
    """With STARTTLS the token only travels inside TLS, and the certificate is verified."""
    write_tokens(token_file, token_server.issue())
    hop = await start_hop(upstream_port=tls_relay.port, upstream_tls="starttls", ca_file=ca_file)

    assert (await deliver(hop.port)).delivered
    assert [(a.ok, a.tls) for a in tls_relay.auths] == [(True, True)]


async def test_implicit_tls(
    start_hop: HopFactory,
    token_server: TokenServer,
    smtps_relay: RelayServer,
    token_file: Path,
    ca_file: Path,
) -> None:
    """Port-465 style: TLS from the first byte."""
    write_tokens(token_file, token_server.issue())
    hop = await start_hop(upstream_port=smtps_relay.port, upstream_tls="tls", ca_file=ca_file)

    assert (await deliver(hop.port)).delivered
    assert len(smtps_relay.received) == 1


async def test_untrusted_certificate_defers(
    start_hop: HopFactory, token_server: TokenServer, tls_relay: RelayServer, token_file: Path
) -> None:
    """A certificate the hop cannot verify is a 4xx, and no token is sent."""
    write_tokens(token_file, token_server.issue())
    hop = await start_hop(upstream_port=tls_relay.port, upstream_tls="starttls")

    outcome = await deliver(hop.port)

    assert outcome.mail == 454, outcome.texts
    assert "4.7.5" in outcome.texts[0]
    assert tls_relay.auths == []


async def test_relay_without_starttls_never_gets_the_token(
    start_hop: HopFactory, token_server: TokenServer, relay: RelayServer, token_file: Path
) -> None:
    """STARTTLS required but not offered: defer rather than send a bearer token in clear."""
    write_tokens(token_file, token_server.issue())
    hop = await start_hop(upstream_tls="starttls")

    outcome = await deliver(hop.port)

    assert outcome.mail == 454, outcome.texts
    assert relay.auths == []
