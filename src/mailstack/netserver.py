"""The controller shape shared by every Python listener (lookup, ManageSieve, next ones).

`start()` returns once the socket is listening (TCP, port 0 allowed, or a Unix socket) and
raises if it cannot bind; `address` then reports where. `stop()` closes the listener and
every open connection and may be called any number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

Address = tuple[str, int] | Path
STOP_GRACE = 2.0  # seconds a handler may take to notice its connection was closed


def format_address(address: Address) -> str:
    """`unix:/path` or `inet:host:port`, the notation Postfix and the CLI use."""
    if isinstance(address, Path):
        return f"unix:{address}"
    return f"inet:{address[0]}:{address[1]}"


def _remove_stale_socket(path: Path) -> None:
    """A socket left by a previous run would make bind() fail; other files are kept."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()


class Listener:
    """Base of a stream server; subclasses implement `handle(reader, writer)`.

    `max_connections` and `max_per_client` (None: unlimited) bound how many connections are
    served at once, in all and per client address; one over either is handed to `refuse()`
    (which a protocol overrides to say why) and closed.
    """

    name = "listener"
    read_limit = 64 * 1024

    def __init__(
        self, *, max_connections: int | None = None, max_per_client: int | None = None
    ) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._per_client: dict[str, int] = {}
        self._path: Path | None = None
        self.address: Address | None = None
        self.max_connections = max_connections
        self.max_per_client = max_per_client

    async def start(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str | os.PathLike[str] | None = None,
        mode: int = 0o660,
    ) -> Address:
        """Listen on `path` (a Unix socket, created with `mode`) or on `host`:`port`."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} is already started")
        if path is not None:
            socket_path = Path(path)
            _remove_stale_socket(socket_path)
            self._server = await self._open_unix(socket_path)
            socket_path.chmod(mode)  # noqa: ASYNC240 - one syscall at start-up
            self._path = socket_path
            self.address = socket_path
        else:
            self._server = await self._open_tcp(host, port)
            bound = self._server.sockets[0].getsockname()
            self.address = (bound[0], bound[1])
        log.info("%s listening on %s", self.name, format_address(self.address))
        return self.address

    async def _open_unix(self, path: Path) -> asyncio.Server:
        return await asyncio.start_unix_server(self._serve, path=path, limit=self.read_limit)

    async def _open_tcp(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._serve, host=host, port=port, limit=self.read_limit)

    @property
    def port(self) -> int:
        if not isinstance(self.address, tuple):
            raise RuntimeError(f"{self.name} is not listening on TCP")
        return self.address[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for writer in self._tasks.values():
            writer.transport.abort()  # readers see EOF; handlers end on their own
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if server is not None:
            await server.wait_closed()
        if self._path is not None:
            _remove_stale_socket(self._path)
            self._path = None

    def _over_limit(self, client: str) -> bool:
        total = self.max_connections is not None and len(self._tasks) >= self.max_connections
        mine = self._per_client.get(client, 0)
        return total or (self.max_per_client is not None and mine >= self.max_per_client)

    async def refuse(self, writer: asyncio.StreamWriter) -> None:
        """Tell a client over the connection limits why it is closed (protocols override)."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - always inside a task here
        peer = writer.get_extra_info("peername") or "unix"
        client = peer[0] if isinstance(peer, tuple) else "unix"
        if self._over_limit(client):
            log.warning("%s: too many connections; refusing %s", self.name, peer)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.refuse(writer)
            writer.transport.abort()
            return
        self._tasks[task] = writer
        self._per_client[client] = self._per_client.get(client, 0) + 1
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels these tasks. Ending quietly keeps asyncio's stream
            # callback from logging the cancellation as an error.
            pass
        except Exception:  # a bug must cost one connection, never the server
            log.exception("%s: unexpected error serving %s", self.name, peer)
        finally:
            self._tasks.pop(task, None)
            left = self._per_client.pop(client, 1) - 1
            if left > 0:
                self._per_client[client] = left
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class ProtocolListener(Listener):
    """A Listener whose connections are `asyncio.Protocol`s made by `make_protocol()`: no
    task, reader or timeout per read, for request/reply hot paths (Postfix's lookups).

    Protocols call `track(transport)` / `untrack(transport)` when connected and lost, so
    `stop()` can close them; the connection limits do not apply (the peers are daemons).
    """

    def __init__(self) -> None:
        super().__init__()
        self._transports: set[asyncio.BaseTransport] = set()

    def make_protocol(self) -> asyncio.Protocol:
        raise NotImplementedError

    async def _open_unix(self, path: Path) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_unix_server(self.make_protocol, path=path)

    async def _open_tcp(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(self.make_protocol, host=host, port=port)

    def track(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)

    def untrack(self, transport: asyncio.BaseTransport) -> None:
        self._transports.discard(transport)

    async def stop(self) -> None:
        for transport in list(self._transports):
            transport.close()
        self._transports.clear()
        await super().stop()


#: Replies written together at most, between checks whether the peer still reads.
BATCH = 64


class FramingError(Exception):
    """The input can never become a request: send `reply` and close the connection."""

    def __init__(self, reply: bytes, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply


@dataclass
class Exchange:
    """How one request/reply protocol frames and answers, for `RequestConnection`.

    `split` takes the next whole request off the buffer (None: more bytes needed; raises
    FramingError). `answer` replies to one request (b"" to send nothing) and says whether to
    keep the connection. `answer_now`, when given, does the same without awaiting anything:
    used while the store answers inline (SQLite), so a read is answered in its callback.
    """

    split: Callable[[bytearray], bytes | None]
    answer: Callable[[bytes], Awaitable[tuple[bytes, bool]]]
    answer_now: Callable[[bytes], tuple[bytes, bool]] | None = None


class RequestConnection(asyncio.Protocol):
    """One connection of a ProtocolListener: requests answered in order, one write per
    batch; closed after `idle_timeout` without input (checked once per period, not reset
    per request)."""

    def __init__(self, server: ProtocolListener, exchange: Exchange, idle_timeout: float) -> None:
        self.server = server
        self.exchange = exchange
        self.idle_timeout = idle_timeout
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.Task[None] | None = None
        self.idle: asyncio.TimerHandle | None = None
        self.active = False
        self.paused = False  # the peer does not read its replies: stop answering and reading

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - stream sockets
        self.transport = transport
        self.server.track(transport)
        self._watch_idle()

    def pause_writing(self) -> None:
        """Replies are piling up unread: answer nothing more and read nothing more until
        they drain, so a client that only sends cannot grow the worker's memory."""
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self.data_received(b"")  # answer what is already buffered

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server.untrack(self.transport)
        if self.idle is not None:
            self.idle.cancel()
        if self.pending is not None:
            self.pending.cancel()

    def _watch_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        if self.active:
            self.active = False
            self._watch_idle()
        elif self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.active = True
        self.buffer += data
        if self.pending is not None or self.paused:
            return  # the running task, or resume_writing, takes the rest in order
        if self.exchange.answer_now is not None:
            self._answer_now(self.exchange.answer_now)
        else:
            self.pending = asyncio.get_running_loop().create_task(self._answer_in_order())

    def _next(self) -> bytes | None:
        try:
            return self.exchange.split(self.buffer)
        except FramingError as exc:
            log.warning("%s: closing connection after bad input: %s", self.server.name, exc)
            self.buffer.clear()
            self._send(exc.reply, keep_open=False)
            return None

    def _send(self, reply: bytes, *, keep_open: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if reply:
            self.transport.write(reply)
        if not keep_open:
            self.transport.close()

    def _answer_now(self, answer: Callable[[bytes], tuple[bytes, bool]]) -> None:
        replies = []
        keep_open = True
        while keep_open and (request := self._next()) is not None:
            reply, keep_open = answer(request)
            replies.append(reply)
            if len(replies) >= BATCH:  # write, so that a slow reader can pause us
                self._send(b"".join(replies), keep_open=keep_open)
                replies = []
                if self.paused:
                    return
        if replies or not keep_open:
            self._send(b"".join(replies), keep_open=keep_open)

    async def _answer_in_order(self) -> None:
        try:
            while not self.paused and (request := self._next()) is not None:
                reply, keep_open = await self.exchange.answer(request)
                self._send(reply, keep_open=keep_open)
                if not keep_open:
                    return
        finally:
            self.pending = None
