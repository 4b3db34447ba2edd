"""Fixtures: a token endpoint, an XOAUTH2 relay and hops, all real, all stopped on teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mailstack.xoauth2 import HopConfig, XOAuth2Hop

from .client import HopFactory
from .servers import CLIENT_ID, CLIENT_SECRET, USERNAME, RelayServer, TokenServer


@pytest.fixture
async def token_server() -> AsyncIterator[TokenServer]:
    server = TokenServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def relay(token_server: TokenServer) -> AsyncIterator[RelayServer]:
    server = RelayServer(token_server)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "xoauth2-tokens" / USERNAME


@pytest.fixture
def make_config(
    token_server: TokenServer, relay: RelayServer, token_file: Path
) -> Callable[..., HopConfig]:
    def make(**overrides: Any) -> HopConfig:
        values: dict[str, Any] = {
            "upstream_host": "127.0.0.1",
            "upstream_port": relay.port,
            "upstream_tls": "none",
            "username": USERNAME,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "token_file": token_file,
            "listen_port": 0,
            "token_endpoint": token_server.url,
            "refresh_retry_after": 0.0,
            "upstream_timeout": 10.0,
        }
        values.update(overrides)
        return HopConfig(**values)

    return make


@pytest.fixture
async def start_hop(make_config: Callable[..., HopConfig]) -> AsyncIterator[HopFactory]:
    hops: list[XOAuth2Hop] = []

    async def start(**overrides: Any) -> XOAuth2Hop:
        hop = XOAuth2Hop(make_config(**overrides))
        hops.append(hop)
        await hop.start()
        return hop

    try:
        yield start
    finally:
        for hop in hops:
            await hop.stop()
