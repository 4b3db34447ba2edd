"""A tiny syslog receiver: a unix datagram socket whose messages become log lines."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from mailstack.log import DaemonLine, emit_daemon_lines
from mailstack.runtime.logparse import LineObserver, parse_syslog_datagram

#: Seconds a log line may wait for others to be written with it.
COALESCE = 0.005


class _Protocol(asyncio.DatagramProtocol):
    """Collects datagrams and writes them out together, at most every COALESCE seconds:
    under load one write (and one wake-up of the loop for output) serves many lines."""

    def __init__(self, observe: LineObserver | None) -> None:
        self.observe = observe
        self.pending: list[DaemonLine] = []
        self.flush_handle: asyncio.TimerHandle | None = None

    def datagram_received(self, data: bytes, addr: object) -> None:
        text = data.decode("utf-8", errors="replace")
        for part in text.split("\n"):
            if part.strip():
                record = parse_syslog_datagram(part)
                if self.observe is not None:
                    self.observe(record)
                self.pending.append(
                    DaemonLine(record.service, record.pid, record.level, record.message)
                )
        if self.pending and self.flush_handle is None:
            loop = asyncio.get_running_loop()
            self.flush_handle = loop.call_later(COALESCE, self.flush)

    def flush(self) -> None:
        self.flush_handle = None
        lines, self.pending = self.pending, []
        emit_daemon_lines(lines)


class SyslogReceiver:
    """Listens on `path` (mode 0666, so daemons that dropped privileges can log).

    `observe` sees every parsed line, as Daemon.observe does for output on pipes: OpenDKIM's
    "DKIM-Signature field added" lines arrive here, not on its stdout.
    """

    def __init__(self, path: Path, observe: LineObserver | None = None) -> None:
        self.path = path
        self.observe = observe
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(str(self.path))
        self.path.chmod(0o666)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self.observe), sock=sock
        )
        self._transport = transport

    async def stop(self) -> None:
        if self._transport is not None:
            protocol = self._transport.get_protocol()
            self._transport.close()
            self._transport = None
            if isinstance(protocol, _Protocol):
                if protocol.flush_handle is not None:
                    protocol.flush_handle.cancel()
                protocol.flush()  # nothing received is lost at stop
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
