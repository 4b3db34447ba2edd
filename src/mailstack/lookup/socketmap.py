"""Postfix socketmap server (see socketmap_table(5)).

Each request is a netstring `<map> <key>`; each reply a netstring `OK <data>`,
`NOTFOUND `, `TEMP <reason>` or `PERM <reason>`. Postfix keeps the connection open for
many requests. If the store cannot be read the answer is `TEMP`, so Postfix defers the
mail (4xx) instead of bouncing it. Broken framing gets `PERM` and the connection is closed,
since nothing after it can be trusted to be in sync.
"""

from __future__ import annotations

import asyncio
import logging

from mailstack.lookup import maps, netstring
from mailstack.lookup.gateway import StoreGateway
from mailstack.netserver import ProtocolListener
from mailstack.store.errors import StoreUnavailable

log = logging.getLogger(__name__)

MAX_REQUEST = 4096  # map name + key; Postfix keys are addresses or domains
MAX_REPLY = 100_000  # Postfix's socketmap_max_reply_size default
IDLE_TIMEOUT = 600.0


class SocketmapServer(ProtocolListener):
    """Answers on a protocol per connection: with SQLite (an inline gateway) every request
    in a read is answered at once, in the callback; with a networked store each request
    goes to the gateway's threads in a task, one at a time per connection, in order."""

    name = "socketmap"

    def __init__(self, gateway: StoreGateway, *, idle_timeout: float = IDLE_TIMEOUT) -> None:
        super().__init__()
        self.gateway = gateway
        self.idle_timeout = idle_timeout

    def make_protocol(self) -> asyncio.Protocol:
        return _Connection(self)

    async def respond(self, payload: bytes) -> bytes:
        """One reply payload for one request payload; never raises."""
        request = _request(payload)
        if isinstance(request, bytes):
            return request
        try:
            found = await self.gateway.call(maps.answer, *request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes TEMP, never a drop
            return _failure(request, exc)
        return _reply(request, found)

    def respond_inline(self, payload: bytes) -> bytes:
        """The same answer without a coroutine, for a gateway that answers inline."""
        request = _request(payload)
        if isinstance(request, bytes):
            return request
        try:
            found = self.gateway.call_inline(maps.answer, *request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes TEMP, never a drop
            return _failure(request, exc)
        return _reply(request, found)


def _request(payload: bytes) -> tuple[str, str] | bytes:
    """(map, key), or the reply for a request that names nothing (NOTFOUND)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return maps.NOT_FOUND.payload()
    name, space, key = text.partition(" ")
    if not space or not key:
        return maps.NOT_FOUND.payload()
    return name, key


def _failure(request: tuple[str, str], exc: Exception) -> bytes:
    name, key = request
    if isinstance(exc, StoreUnavailable):
        log.warning("socketmap %s: store unavailable: %s", name, exc)
        return b"TEMP store unavailable"
    log.error("socketmap %s: lookup of %r failed", name, key, exc_info=exc)
    return b"TEMP internal error"  # defer the mail rather than drop the connection


def _reply(request: tuple[str, str], found: maps.Answer) -> bytes:
    reply = found.payload()
    if len(reply) > MAX_REPLY:
        name, key = request
        log.warning("socketmap %s: reply for %r is %d bytes", name, key, len(reply))
        return b"PERM reply too long"
    return reply


class _Connection(asyncio.Protocol):
    """One Postfix connection: many requests, each answered in order."""

    def __init__(self, server: SocketmapServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.Task[None] | None = None
        self.idle: asyncio.TimerHandle | None = None
        self.active = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - stream sockets
        self.transport = transport
        self.server.track(transport)
        self._watch_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server.untrack(self.transport)
        if self.idle is not None:
            self.idle.cancel()
        if self.pending is not None:
            self.pending.cancel()

    def _watch_idle(self) -> None:
        """Close a connection that sent nothing for idle_timeout; checked once per period
        (a flag per request, not a timer per request)."""
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.server.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        if self.active:
            self.active = False
            self._watch_idle()
        elif self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.active = True
        self.buffer += data
        if self.pending is not None:
            return  # the running task takes the rest in order
        if self.server.gateway.inline:
            self._answer_inline()
        else:
            self.pending = asyncio.get_running_loop().create_task(self._answer_in_order())

    def _next(self) -> bytes | None:
        """The next complete request, or None; closes the connection on broken framing."""
        try:
            decoded = netstring.decode(self.buffer, MAX_REQUEST)
        except netstring.NetstringError as exc:
            log.warning("socketmap: closing connection after bad request: %s", exc)
            if self.transport is not None:
                self.transport.write(netstring.encode(b"PERM malformed request"))
                self.transport.close()
            self.buffer.clear()
            return None
        if decoded is None:
            return None
        payload, used = decoded
        del self.buffer[:used]
        return payload

    def _answer_inline(self) -> None:
        replies = []
        while (payload := self._next()) is not None:
            replies.append(netstring.encode(self.server.respond_inline(payload)))
        if replies and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(replies))

    async def _answer_in_order(self) -> None:
        try:
            while (payload := self._next()) is not None:
                reply = await self.server.respond(payload)
                if self.transport is None or self.transport.is_closing():
                    return
                self.transport.write(netstring.encode(reply))
        finally:
            self.pending = None
