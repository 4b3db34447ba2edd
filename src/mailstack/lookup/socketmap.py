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
from mailstack.netserver import Listener
from mailstack.store.errors import StoreUnavailable

log = logging.getLogger(__name__)

MAX_REQUEST = 4096  # map name + key; Postfix keys are addresses or domains
MAX_REPLY = 100_000  # Postfix's socketmap_max_reply_size default
IDLE_TIMEOUT = 600.0


class SocketmapServer(Listener):
    name = "socketmap"

    def __init__(self, gateway: StoreGateway, *, idle_timeout: float = IDLE_TIMEOUT) -> None:
        super().__init__()
        self.gateway = gateway
        self.idle_timeout = idle_timeout

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        while True:
            try:
                decoded = netstring.decode(buffer, MAX_REQUEST)
            except netstring.NetstringError as exc:
                log.warning("socketmap: closing connection after bad request: %s", exc)
                writer.write(netstring.encode(b"PERM malformed request"))
                await writer.drain()
                return
            if decoded is None:
                chunk = await asyncio.wait_for(reader.read(4096), self.idle_timeout)
                if not chunk:
                    return
                buffer += chunk
                continue
            payload, used = decoded
            del buffer[:used]
            reply = await self.respond(payload)
            writer.write(netstring.encode(reply))
            await writer.drain()

    async def respond(self, payload: bytes) -> bytes:
        """One reply payload for one request payload; never raises."""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return maps.NOT_FOUND.payload()
        name, space, key = text.partition(" ")
        if not space or not key:
            return maps.NOT_FOUND.payload()
        try:
            found = await self.gateway.call(maps.answer, name, key)
        except StoreUnavailable as exc:
            log.warning("socketmap %s: store unavailable: %s", name, exc)
            return b"TEMP store unavailable"
        except Exception:  # defer the mail rather than drop the connection
            log.exception("socketmap %s: lookup of %r failed", name, key)
            return b"TEMP internal error"
        reply = found.payload()
        if len(reply) > MAX_REPLY:
            log.warning("socketmap %s: reply for %r is %d bytes", name, key, len(reply))
            return b"PERM reply too long"
        return reply
