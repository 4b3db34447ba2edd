"""A tiny syslog receiver: a unix datagram socket whose messages become log lines."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from mailstack.log import DaemonLine, emit_daemon_lines
from mailstack.runtime.logparse import LineObserver, parse_syslog_datagram

#: Seconds a log line may wait for others to be written with it.
COALESCE = 0.02
#: Datagrams read per wake-up at most, so a flood cannot starve the other daemons' output.
MAX_READS = 256


class _Lines:
    """Collects datagrams and writes them out together, at most every COALESCE seconds:
    under load one write (and one wake-up of the loop for output) serves many lines."""

    def __init__(self, observe: LineObserver | None) -> None:
        self.observe = observe
        self.pending: list[DaemonLine] = []
        self.flush_handle: asyncio.TimerHandle | None = None

    def take(self, data: bytes) -> None:
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
    "DKIM-Signature field added" lines arrive here, not on its stdout. Each wake-up of the
    loop reads every datagram waiting (asyncio's datagram transport reads one per wake-up).
    It never pauses reading to gather more: a Unix datagram socket queues at most
    net.unix.max_dgram_qlen datagrams (10 by default) and then blocks the sender, so OpenDKIM
    would wait on its own log lines (measured: relay throughput 15 % lower with a 20 ms pause).
    """

    def __init__(self, path: Path, observe: LineObserver | None = None) -> None:
        self.path = path
        self.lines = _Lines(observe)
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setblocking(False)
        sock.bind(str(self.path))
        self.path.chmod(0o666)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        self._sock = sock

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(MAX_READS):
            try:
                data = sock.recv(65536)
            except OSError:  # nothing more waiting (BlockingIOError), or closed
                return
            self.lines.take(data)

    async def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            self._readable_until_empty(sock)
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
            if self.lines.flush_handle is not None:
                self.lines.flush_handle.cancel()
            self.lines.flush()  # nothing received is lost at stop
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _readable_until_empty(self, sock: socket.socket) -> None:
        while True:
            try:
                self.lines.take(sock.recv(65536))
            except OSError:
                return
