"""The lookup service: one asyncio process serving Postfix (socketmap) and Dovecot (dict).

Both servers share one engine and one gateway, so the whole process holds a handful of
database connections however many daemons ask. Nothing is cached: a change made through
the store's service layer is visible to the very next lookup.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from mailstack.lookup.dictserver import AUTH, EVERYTHING, SIEVE, DictServer
from mailstack.lookup.gateway import DEFAULT_TIMEOUT, StoreGateway
from mailstack.lookup.resolver import Resolver
from mailstack.lookup.socketmap import SocketmapServer
from mailstack.netserver import Address


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens: a Unix socket path, or host and port (0 = any free port)."""

    path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    mode: int = 0o660

    @classmethod
    def parse(cls, text: str, mode: int = 0o660) -> Endpoint:
        """`unix:/path`, `inet:host:port`, a bare `/path` or a bare `host:port`."""
        if text.startswith("unix:"):
            return cls(path=Path(text[5:]), mode=mode)
        if text.startswith("/"):
            return cls(path=Path(text), mode=mode)
        rest = text.removeprefix("inet:")
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{text!r} is not unix:/path or inet:host:port")
        return cls(host=host.strip("[]"), port=int(port), mode=mode)


@dataclass
class LookupService:
    """Controller for both servers: `await start()`, `await stop()` (idempotent)."""

    engine: Engine
    socketmap: Endpoint | None = field(default_factory=Endpoint)
    dict: Endpoint | None = field(default_factory=Endpoint)
    #: With its own endpoint, sieve scripts are served there and `dict` serves only passdb
    #: and userdb (password hashes reach Dovecot's auth process, not the mail processes).
    sieve_dict: Endpoint | None = None
    timeout: float = DEFAULT_TIMEOUT
    workers: int | None = None  # None: inline for SQLite, threads for PostgreSQL

    def __post_init__(self) -> None:
        self.gateway = StoreGateway(
            Resolver(self.engine), workers=self.workers, timeout=self.timeout
        )
        self.socketmap_server = SocketmapServer(self.gateway)
        split = self.sieve_dict is not None
        serves = frozenset({AUTH}) if split else EVERYTHING
        self.dict_server = DictServer(self.gateway, serves=serves)
        self.sieve_dict_server = DictServer(self.gateway, serves=frozenset({SIEVE}))
        self.sieve_dict_server.name = "sieve dict"
        self._started = False

    async def start(self) -> None:
        try:
            if self.socketmap is not None:
                await _listen(self.socketmap_server, self.socketmap)
            if self.dict is not None:
                await _listen(self.dict_server, self.dict)
            if self.sieve_dict is not None:
                await _listen(self.sieve_dict_server, self.sieve_dict)
        except BaseException:
            await self.stop()
            raise
        self._started = True

    @property
    def socketmap_address(self) -> Address | None:
        return self.socketmap_server.address

    @property
    def dict_address(self) -> Address | None:
        return self.dict_server.address

    async def stop(self) -> None:
        await self.socketmap_server.stop()
        await self.dict_server.stop()
        await self.sieve_dict_server.stop()
        if not getattr(self, "_closed", False):
            self._closed = True
            self.gateway.close()


async def _listen(server: SocketmapServer | DictServer, endpoint: Endpoint) -> None:
    if endpoint.path is not None:
        await server.start(path=os.fspath(endpoint.path), mode=endpoint.mode)
    else:
        await server.start(host=endpoint.host, port=endpoint.port)
