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
from typing import TYPE_CHECKING

from mailstack.lookup import maps, netstring
from mailstack.netserver import Exchange, FramingError, ProtocolListener, RequestConnection
from mailstack.store.errors import StoreUnavailable

if TYPE_CHECKING:  # not at run time: the relay's MTA-STS map shares this module's framing
    from mailstack.lookup.gateway import StoreGateway

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
        def answer_now(payload: bytes) -> tuple[bytes, bool]:
            return netstring.encode(self.respond_inline(payload)), True

        inline = answer_now if self.gateway.inline else None
        exchange = Exchange(split=split_request, answer=self._answer, answer_now=inline)
        return RequestConnection(self, exchange, self.idle_timeout)

    async def _answer(self, payload: bytes) -> tuple[bytes, bool]:
        return netstring.encode(await self.respond(payload)), True

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


def split_request(buffer: bytearray) -> bytes | None:
    """The next request's payload off the buffer; broken framing gets PERM and a close,
    since nothing after it can be trusted to be in sync."""
    try:
        decoded = netstring.decode(buffer, MAX_REQUEST)
    except netstring.NetstringError as exc:
        raise FramingError(netstring.encode(b"PERM malformed request"), str(exc)) from None
    if decoded is None:
        return None
    payload, used = decoded
    del buffer[:used]
    return payload


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
