"""A tiny syslog receiver: a unix stream socket whose messages become log lines."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from pathlib import Path

from mailstack.log import DaemonLine, emit_daemon_lines
from mailstack.runtime.daemon import OutputPump
from mailstack.runtime.logparse import LineObserver, parse_syslog_message

#: Connections accepted per wake-up at most.
MAX_ACCEPTS = 16
#: Connections open at once at most (each logging process holds one): the socket is open to
#: every local user, and one that opened connections without end would use up the
#: supervisor's file descriptors. Past it a new connection is closed at once.
MAX_CONNECTIONS = 64


class SyslogReceiver:
    """Listens on `path` (mode 0666, so daemons that dropped privileges can log).

    A stream socket, not the usual datagram one: syslog(3) in glibc (OpenDKIM), Python's
    SysLogHandler and util-linux's logger try a datagram socket first and use a stream when
    the path is one, ending each message with a NUL. A stream lets the reader gather lines
    as it does for the daemons' pipes (`OutputPump`: one read, one parse loop and one write
    per 20 ms under load). A datagram socket could not: the loop woke once per message
    (OpenDKIM logs one per signature), and pausing its reads blocks the sender, because the
    kernel queues only net.unix.max_dgram_qlen (10) datagrams; a stream's buffer holds far
    more than 20 ms of lines.

    `observe` sees every parsed line, as Daemon.observe does for output on pipes: OpenDKIM's
    "DKIM-Signature field added" lines arrive here, not on its stdout.
    """

    def __init__(self, path: Path, observe: LineObserver | None = None) -> None:
        self.path = path
        self.observe = observe
        self._sock: socket.socket | None = None
        self._pumps: set[OutputPump] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind(str(self.path))
        self.path.chmod(0o666)
        sock.listen(64)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)
        self._sock = sock

    def _accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(MAX_ACCEPTS):
            try:
                conn, _ = sock.accept()
            except OSError:  # nothing more waiting (BlockingIOError), or closed
                return
            if len(self._pumps) >= MAX_CONNECTIONS:
                conn.close()
                continue
            pump = OutputPump(conn.detach(), self._take, separator=b"\0")
            self._pumps.add(pump)
            pump.done.add_done_callback(functools.partial(self._closed, pump))

    def _closed(self, pump: OutputPump, _done: asyncio.Future[None]) -> None:
        self._pumps.discard(pump)

    def _take(self, messages: list[bytes]) -> None:
        batch = []
        observe = self.observe
        for message in messages:
            for part in message.decode("utf-8", errors="replace").split("\n"):
                if part.strip():
                    record = parse_syslog_message(part)
                    if observe is not None:
                        observe(record)
                    batch.append(
                        DaemonLine(record.service, record.pid, record.level, record.message)
                    )
        emit_daemon_lines(batch)

    async def stop(self) -> None:
        """Stop listening; what the senders wrote before is read and logged (nothing is lost)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        for pump in list(self._pumps):
            pump.drain()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
