"""One supervised daemon: start it, pump its output into the log, probe readiness, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable

from mailstack.errors import DaemonError
from mailstack.log import DaemonLine, emit_daemon_lines
from mailstack.runtime.logparse import LineObserver, LogRecord
from mailstack.runtime.orphans import die_with_parent

log = logging.getLogger("mailstack.supervisor")

LineParser = Callable[[str], LogRecord]
#: Reads smaller than this wait COALESCE_SECONDS for more output before the next read.
COALESCE_BELOW = 4096
COALESCE_SECONDS = 0.02
#: Bytes asked for per read of a child's output (see OutputPump).
READ_SIZE = 1 << 16
#: Seconds between checks whether a child has exited (see Daemon.wait_exit).
EXIT_POLL = 0.1
#: Readiness is asked every PROBE_FIRST seconds during a daemon's first PROBE_FAST seconds
#: (most are up within them: each step of the start is that much sooner), then every
#: PROBE_THEN.
PROBE_FIRST, PROBE_FAST, PROBE_THEN = 0.01, 0.5, 0.05
KNOCK_EVERY = 0.1
Probe = Callable[[], Awaitable[bool]]


class OutputPump:
    """Reads a child's output pipe (or a syslog client's stream) and hands on whole lines,
    as many as one read brings.

    Plain `os.read` on an `add_reader` callback, not asyncio's subprocess streams: their
    pipe transport reads with a 256 KiB buffer, which glibc serves with mmap and munmap on
    every read (about 50 µs each, a third of the relay's log cost per message); 64 KiB
    stays on the heap. A trickle (Postfix writes line by line) is left to gather for
    COALESCE_SECONDS so that one read, one parse loop and one write take many lines.
    `separator` ends a line (syslog(3) over a stream socket ends each message with a NUL).
    """

    def __init__(
        self, fd: int, emit: Callable[[list[bytes]], None], separator: bytes = b"\n"
    ) -> None:
        self.fd = fd
        self.emit = emit
        self.separator = separator
        self.pending = b""
        self.loop = asyncio.get_running_loop()
        #: done at end of file (or close): what drain_output waits for
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.resume: asyncio.TimerHandle | None = None
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self.readable)

    def readable(self) -> None:
        try:
            chunk = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            if self.pending:
                self.emit([self.pending])
                self.pending = b""
            self.close()
            return
        *lines, self.pending = (self.pending + chunk).split(self.separator)
        if len(self.pending) > 1 << 20:  # a runaway line: pass it on in pieces
            lines.append(self.pending)
            self.pending = b""
        if lines:
            self.emit(lines)
        if len(chunk) < COALESCE_BELOW:
            self.loop.remove_reader(self.fd)
            self.resume = self.loop.call_later(COALESCE_SECONDS, self.read_again)

    def read_again(self) -> None:
        self.resume = None
        if not self.done.done():
            self.loop.add_reader(self.fd, self.readable)

    def drain(self) -> None:
        """Pass on what is waiting to be read now, without waiting for more, and close."""
        if self.done.done():
            return
        chunks = [self.pending]
        while True:
            try:
                chunk = os.read(self.fd, READ_SIZE)
            except OSError:  # BlockingIOError: nothing more is waiting
                break
            if not chunk:
                break
            chunks.append(chunk)
        self.pending = b""
        lines = [line for line in b"".join(chunks).split(self.separator) if line]
        if lines:
            self.emit(lines)
        self.close()

    def close(self) -> None:
        """Stop reading and close the descriptor (idempotent)."""
        if self.done.done():
            return
        if self.resume is not None:
            self.resume.cancel()
        self.loop.remove_reader(self.fd)
        os.close(self.fd)
        self.done.set_result(None)


def knock(path: str) -> None:
    """Connect to the Unix socket `path` and hang up: a daemon that looks for a stop request
    only when its listener wakes (OpenDKIM's milter library: every 5 s) stops at once."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(1)
        sock.connect(path)


class Daemon:
    """A child process plus what the supervisor needs to know about it."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        parse_line: LineParser,
        probe: Probe,
        ready_timeout: float = 30.0,
        own_group: bool = False,
        wake_on_stop: str | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.parse_line = parse_line
        self.probe = probe
        self.ready_timeout = ready_timeout
        #: started in a process group of its own, ended as a whole once it exits: for a
        #: daemon whose children may outlive it (Dovecot's sessions, kept across reloads)
        self.own_group = own_group
        #: a Unix socket it listens on, connected to after SIGTERM until it exits (`stop`)
        self.wake_on_stop = wake_on_stop
        self.process: asyncio.subprocess.Process | None = None
        self.tail: deque[str] = deque(maxlen=20)
        self.restarts = 0
        #: Sees every parsed line (the metrics count mail events with it); None costs nothing.
        self.observe: LineObserver | None = None
        self._pumps: list[OutputPump] = []

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited (yet)."""
        return self.process is not None and self.process.returncode is None

    def end_group(self) -> None:
        """SIGTERM to what is left of an own-group daemon's process group."""
        if self.own_group and self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)

    async def start(self) -> None:
        self.end_group()  # a crashed run's children must not linger beside the new one
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                env=self.env,
                preexec_fn=die_with_parent,
                start_new_session=self.own_group,
            )
        except BaseException:
            for fd in (out_read, err_read):
                os.close(fd)
            raise
        finally:
            for fd in (out_write, err_write):
                os.close(fd)
        self._pumps = [OutputPump(fd, self._emit) for fd in (out_read, err_read)]
        log.info("started %s (pid %s)", self.name, self.process.pid)

    def _emit(self, raw_lines: list[bytes]) -> None:
        batch = []
        observe = self.observe
        for raw in raw_lines:
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            if not line.strip():
                continue
            self.tail.append(line)
            record = self.parse_line(line)
            if observe is not None:
                observe(record)
            batch.append(
                DaemonLine(record.service, record.pid, record.level, record.message, record.fields)
            )
        emit_daemon_lines(batch)

    async def wait_ready(self) -> None:
        """Poll the probe until it succeeds; fail early if the process exits."""
        started = time.monotonic()
        deadline = started + self.ready_timeout
        while (now := time.monotonic()) < deadline:
            if self.process is None or self.process.returncode is not None:
                await self.drain_output()
                raise DaemonError(self.name, "exited during start-up", list(self.tail))
            if await self.probe():
                return
            await asyncio.sleep(PROBE_FIRST if now - started < PROBE_FAST else PROBE_THEN)
        raise DaemonError(self.name, f"not ready after {self.ready_timeout:.0f} s", list(self.tail))

    async def wait_exit(self) -> int:
        """The exit code, as soon as the process has exited.

        Not `Process.wait()`: on Python 3.11 it also waits until every copy of the child's
        output pipes is closed, and a process the child left behind (an smtpd in a session
        when Postfix's master was killed) keeps them open for minutes, so the crash would go
        unnoticed and nothing restarted. The exit code itself is known at once.
        """
        assert self.process is not None  # noqa: S101
        while self.process.returncode is None:
            await asyncio.sleep(EXIT_POLL)
        if self.own_group:  # what the process forked and left behind goes with it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode

    async def exited(self, timeout: float) -> bool:
        """Whether the process exited within `timeout` seconds (see wait_exit)."""
        try:
            await asyncio.wait_for(self.wait_exit(), timeout)
        except TimeoutError:
            return False
        return True

    async def drain_output(self, timeout: float = 1.0) -> None:
        """Let the pumps pass on what the process wrote before it ended."""
        if self._pumps:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(asyncio.shield(pump.done) for pump in self._pumps)), timeout
                )

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    async def knocked_until_exit(self, path: str, timeout: float) -> bool:
        """Knock every KNOCK_EVERY seconds until the process exits (True) or `timeout`
        passes: a knock that comes before the daemon took in the SIGTERM wakes it for
        nothing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.to_thread(knock, path)
            if await self.exited(KNOCK_EVERY):
                return True
        return False

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait (knocking, for a `wake_on_stop` daemon), then SIGKILL."""
        if self.process is None:
            return
        if self.process.returncode is None:
            self.signal(signal.SIGTERM)
            if self.wake_on_stop is not None:
                gone = await self.knocked_until_exit(self.wake_on_stop, timeout)
            else:
                gone = await self.exited(timeout)
            if not gone:
                log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
                self.signal(signal.SIGKILL)
                await self.wait_exit()
        self.end_group()
        await self.drain_output()
        for pump in self._pumps:
            pump.close()
