"""A tiny syslog receiver: a unix datagram socket whose messages become log lines."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from mailstack.log import emit_daemon_line
from mailstack.runtime.logparse import LineObserver, parse_syslog_datagram


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, observe: LineObserver | None) -> None:
        self.observe = observe

    def datagram_received(self, data: bytes, addr: object) -> None:
        text = data.decode("utf-8", errors="replace")
        for part in text.split("\n"):
            if part.strip():
                record = parse_syslog_datagram(part)
                if self.observe is not None:
                    self.observe(record)
                emit_daemon_line(record.service, record.pid, record.level, record.message)


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
            self._transport.close()
            self._transport = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
