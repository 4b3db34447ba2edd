"""Run Postfix's master in the foreground and stop it the way Postfix wants to be stopped.

We start `master -s` ourselves rather than `postfix start-fg`: the latter is a shell wrapper,
and signalling the wrapper leaves the master running. The master becomes a session leader, so
its process group holds every Postfix process and nothing is left behind after a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailstack.errors import DaemonError
from mailstack.log import structured
from mailstack.runtime.daemon import Daemon
from mailstack.runtime.files import write_atomic
from mailstack.runtime.logparse import LogRecord, parse_postfix_line
from mailstack.runtime.plan import PostfixPlan
from mailstack.runtime.probes import smtp_ready
from mailstack.settings.values import parse_listen

log = logging.getLogger("mailstack.postfix")


#: Seconds to wait for killed leftovers to be gone (and their ports free).
LEFTOVER_GRACE = 5.0

#: Where distributions put Postfix's daemons; asked of postconf only as a last resort.
DAEMON_DIRECTORIES = ("/usr/lib/postfix/sbin", "/usr/libexec/postfix")


def daemon_directory(config_dir: Path, env: dict[str, str]) -> str:
    for folder in DAEMON_DIRECTORIES:
        if Path(folder, "master").is_file():
            return folder
    result = subprocess.run(
        ["postconf", "-c", str(config_dir), "-h", "daemon_directory"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str  # R, S, Z...
    ppid: int
    pgrp: int


def processes() -> Iterator[ProcStat]:
    """Every process of /proc/*/stat that can be read now."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        yield ProcStat(int(entry.name), comm, state, int(ppid), int(pgrp))


def children_named(parent: int, name: str) -> set[int]:
    """PIDs of `parent`'s children whose command is `name` (read from /proc)."""
    return {p.pid for p in processes() if p.ppid == parent and p.comm == name}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs. Zombies do not count: once the master
    is gone its exited children wait for init to reap them, which may take a second."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(p.pgrp == pgid and p.state != "Z" for p in processes())


class Postfix(Daemon):
    """The Postfix master and, through its process group, every Postfix process."""

    def __init__(self, plan: PostfixPlan) -> None:
        """The first listener is the one probed for readiness, with EHLO."""
        self.plan = plan
        self.config_dir = Path(plan.config_dir)
        self.queue_dir = Path(plan.queue_dir)
        self.listeners = [parse_listen(text) for text in plan.listeners]
        process = plan.process
        super().__init__(
            name=process.name,
            argv=process.argv,
            env=process.env,
            parse_line=self._parse,
            probe=lambda: smtp_ready(self.listeners[0]),
            ready_timeout=process.ready_timeout,
        )

    def _parse(self, line: str) -> LogRecord:
        return parse_postfix_line(line, with_fields=self.observe is not None or structured())

    def check_listeners(self) -> None:
        """Postfix reports a busy port only to syslog; find out first and say so clearly."""
        for address in self.listeners:
            family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((address.host, address.port))
                except OSError as exc:
                    raise DaemonError(
                        "postfix", f"cannot listen on {address}: {exc.strerror}"
                    ) from None

    async def start(self) -> None:
        self.kill_leftovers()
        self.check_listeners()
        if self.process is not None:  # a restart: accept mail again
            self._write_master_cf(accepting=True)
        await super().start()

    def _write_master_cf(self, accepting: bool) -> None:
        text = self.plan.master_cf_accepting if accepting else self.plan.master_cf_closing
        write_atomic(self.config_dir / "master.cf", text)

    def kill_leftovers(self) -> None:
        """After a crash the old master's children may still hold the listeners (an smtpd
        in a session inherits them): kill the group and wait until it is gone."""
        if self.process is not None and group_alive(self.process.pid):
            log.warning("killing processes left over by the previous Postfix master")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            deadline = time.monotonic() + LEFTOVER_GRACE
            while group_alive(self.process.pid) and time.monotonic() < deadline:
                time.sleep(0.02)

    async def flush_deferred(self) -> None:
        """Retry mail kept from an earlier run now, not after the next queue scan."""
        deferred = self.queue_dir / "deferred"
        if not any(p.is_dir() and any(p.iterdir()) for p in deferred.iterdir()):
            return
        log.info("retrying mail deferred before this start")
        proc = await asyncio.create_subprocess_exec(
            "postqueue",
            "-c",
            str(self.config_dir),
            "-f",
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            log.warning("postqueue -f failed: %s", err.decode(errors="replace").strip())

    async def graceful_stop(self, timeout: float) -> None:
        """Turn new clients away, let running sessions finish (up to `timeout`), then stop."""
        proc = self.process
        if proc is None or proc.returncode is not None:
            self.kill_leftovers()
            return
        sessions = children_named(proc.pid, "smtpd")
        self._write_master_cf(accepting=False)
        self.signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        if sessions:
            log.info(
                "waiting up to %.0f s for %d SMTP session(s) to finish", timeout, len(sessions)
            )
        while sessions and time.monotonic() < deadline:
            sessions = {pid for pid in sessions if _alive(pid)}
            await asyncio.sleep(0.05)
        if sessions:
            log.warning(
                "%d SMTP session(s) still open after %.0f s; closing them", len(sessions), timeout
            )
        self.signal(signal.SIGTERM)
        if not await self.exited(10):
            log.warning("Postfix master did not stop; killing it")
        end = time.monotonic() + 5
        while group_alive(proc.pid) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        self.kill_leftovers()
        await self.exited(5)
        await self.drain_output()
        self._write_master_cf(accepting=True)
        log.info("postfix stopped; the queue stays in %s", self.queue_dir)


def postfix_plan(
    config_dir: Path,
    queue_dir: Path,
    env: dict[str, str],
    listeners: list[str],
    master_cf_accepting: str,
    master_cf_closing: str,
) -> PostfixPlan:
    """Postfix's part of a plan: `master -s` on the rendered configuration folder."""
    from mailstack.runtime.plan import Probe, Process

    master = str(Path(daemon_directory(config_dir, env), "master"))
    process = Process(
        name="postfix",
        argv=[master, "-c", str(config_dir), "-s"],
        env=env,
        probes=[Probe("smtp", listeners[0])],
        log_parser="postfix",
    )
    return PostfixPlan(
        process=process,
        config_dir=str(config_dir),
        queue_dir=str(queue_dir),
        master_cf_accepting=master_cf_accepting,
        master_cf_closing=master_cf_closing,
        listeners=listeners,
    )
