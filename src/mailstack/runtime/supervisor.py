"""`mailstack run`: start the daemons in order, restart crashed ones, stop them gracefully.

OpenDKIM must answer on its socket before Postfix accepts mail, so nothing leaves unsigned.
A daemon that exits is restarted with exponential back-off; one that crashes more than
RESTART_BUDGET times within RESTART_WINDOW seconds stops mailstack with exit 69 and its last
log lines. SIGTERM or SIGINT start a graceful stop; the queue stays on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mailstack.deliverylog.journal import with_delivery_journal
from mailstack.errors import DaemonError, ExitCode
from mailstack.runtime.daemon import Daemon
from mailstack.runtime.logparse import (
    LineObserver,
    LogRecord,
    parse_dovecot_line,
    parse_worker_line,
)
from mailstack.runtime.plan import Job, Plan, Process
from mailstack.runtime.postfix import Postfix
from mailstack.runtime.probes import probe_passes
from mailstack.runtime.syslog import SyslogReceiver

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

    from mailstack.metrics import MetricsServer

log = logging.getLogger("mailstack.supervisor")

RESTART_BUDGET = 5
RESTART_WINDOW = 300.0
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
#: How often the TLS files are looked at; a change is acted on once two looks agree, so a
#: certificate and key replaced one after the other are loaded as a pair.
TLS_WATCH_SECONDS = 5.0


def syslog_path(root: Path, private_dev: Path) -> tuple[Path, bool]:
    """Where OpenDKIM's syslog lines arrive, and whether it needs a private /dev to get there."""
    real = Path("/dev/log")
    if root == Path("/") and not real.exists():
        return real, False
    return private_dev / "log", True


def opendkim_process(
    config: Path, socket: Path, env: dict[str, str], private_dev: Path | None
) -> Process:
    """OpenDKIM in the foreground; with `private_dev`, it logs into our syslog receiver."""
    from mailstack.runtime.plan import Probe

    argv = ["opendkim", "-f", "-x", str(config)]
    if private_dev is not None:
        # the launcher needs only the standard library: run as a file, without site-packages
        # (-I -S), the interpreter is up in a fifth of the time and OpenDKIM starts sooner
        launcher = str(Path(__file__).with_name("devlog.py"))
        argv = [sys.executable, "-I", "-S", launcher, str(private_dev), "--", *argv]
    probes = [Probe("unix", str(socket))]
    return Process("opendkim", argv, env, probes, ready_timeout=15.0, wake_on_stop=str(socket))


async def all_then_first_error(steps: Iterable[Awaitable[None]]) -> None:
    """Run `steps` together, let every one finish, then raise the first one's error, if any
    (one failing must not cut the others short: a start or stop left half done can leave a
    child nobody stops)."""
    for outcome in await asyncio.gather(*steps, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def daemon_for(process: Process) -> Daemon:
    """A supervised child from its plan entry."""
    name = process.name

    async def probe() -> bool:
        for check in process.probes:
            if not await probe_passes(check.kind, check.target):
                return False
        return True

    parsers = {"dovecot": parse_dovecot_line, "worker": parse_worker_line}
    return Daemon(
        name=name,
        argv=process.argv,
        env=process.env,
        parse_line=parsers.get(process.log_parser, lambda line: LogRecord(name, line)),
        probe=probe,
        ready_timeout=process.ready_timeout,
        own_group=process.own_group,
        wake_on_stop=process.wake_on_stop,
    )


async def _never() -> bool:
    return False


#: How often a job's trigger file is looked for.
TRIGGER_SECONDS = 1.0


async def _triggered(path: Path) -> None:
    """Return once `path` exists, having removed it (requests made meanwhile are one)."""
    while True:
        try:
            path.unlink()  # noqa: ASYNC240 - one fast system call on a local folder
            return
        except FileNotFoundError:
            await asyncio.sleep(TRIGGER_SECONDS)


def seconds_until(at: str, now: float) -> float:
    """Seconds from `now` to the next HH:MM local time (tomorrow's when it has passed)."""
    hour, minute = (int(part) for part in at.split(":"))
    today = time.localtime(now)
    target = time.mktime((*today[:3], hour, minute, 0, 0, 0, -1))
    if target <= now:
        tomorrow = time.localtime(now + 86400)
        target = time.mktime((*tomorrow[:3], hour, minute, 0, 0, 0, -1))
    return target - now


class Supervisor:
    """Runs one plan: starts its processes in order, restarts them, stops them."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.profile = plan.profile
        self.stopping = asyncio.Event()
        self.syslog: SyslogReceiver | None = None
        self.daemons: list[Daemon] = []
        self.metrics: MetricsServer | None = None
        self._observe: LineObserver | None = None
        self._crashes: dict[str, list[float]] = {}
        self._critical = {process.name: process.critical for process in plan.processes}

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        # SIGHUP too: a closed terminal (or a `kill -HUP`) stops gracefully, it does not
        # leave the daemons behind as Python's default action would
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._request_stop, signum)
        jobs: list[asyncio.Task[None]] = []
        try:
            await self._start_all()
            log.info("%s", self.plan.ready_message)
            jobs = [asyncio.create_task(self._schedule(job)) for job in self.plan.jobs]
            if self.plan.tls_watch:  # background tasks, cancelled at stop like the jobs
                jobs.append(asyncio.create_task(self._watch_tls()))
            await self._watch()
            return ExitCode.OK
        finally:
            for task in jobs:
                task.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            await self.stop_all()

    def _request_stop(self, signum: int) -> None:
        if not self.stopping.is_set():
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.stopping.set()

    def _start_metrics(self) -> None:
        """Serve /metrics and count mail events in the log pipeline, when asked to.

        Imported here, not at the top: prometheus_client costs start-up time and memory that a
        relay without MAILSTACK_METRICS_LISTEN should not pay.
        """
        address = self.plan.metrics_listen
        if address is None:
            return
        from mailstack.metrics import relay_metrics
        from mailstack.settings.values import parse_listen

        counter, self.metrics = relay_metrics(
            parse_listen(address),
            Path(self.plan.postfix.queue_dir),
            lambda: tuple(self.daemons),
            self.profile,
            certificate=Path(self.plan.tls_watch[0]) if self.plan.tls_watch else None,
        )
        self._observe = counter.observe
        self.metrics.start()
        log.info("serving metrics on http://%s/metrics", address)

    async def _start_all(self) -> None:
        self._start_metrics()
        self._observe = with_delivery_journal(self.plan.delivery_log, self._observe)
        if self.plan.syslog_path is not None:
            self.syslog = SyslogReceiver(Path(self.plan.syslog_path), observe=self._observe)
            await self.syslog.start()
        await self.start_together(self.plan.processes)
        postfix = Postfix(self.plan.postfix)
        await self._add(postfix)
        await postfix.flush_deferred()

    async def start_together(self, processes: list[Process]) -> None:
        """Start every process at once, each after those named in its `after` are ready:
        the worker, OpenDKIM and Dovecot need nothing from each other to start (Dovecot and
        Postfix reach the worker at their first lookup). When one fails, the others' starts
        are let finish (a start cut short could leave a child nobody stops), what waits for
        the failed one is not started, and the first failure is raised; `stop_all` stops
        every process that runs."""
        daemons = [daemon_for(process) for process in processes]
        for daemon in daemons:  # in plan order, whichever is ready first
            daemon.observe = self._observe
            self.daemons.append(daemon)
        settled = {daemon.name: asyncio.Event() for daemon in daemons}
        failed: set[str] = set()

        async def start(process: Process, daemon: Daemon) -> None:
            try:
                for name in process.after:
                    await settled[name].wait()
                    if name in failed:
                        raise DaemonError(daemon.name, f"not started: {name} did not start", [])
                await self._start(daemon)
            except BaseException:
                failed.add(daemon.name)
                raise
            finally:
                settled[daemon.name].set()

        pairs = zip(processes, daemons, strict=True)
        await all_then_first_error(start(p, d) for p, d in pairs)

    async def _add(self, daemon: Daemon) -> None:
        """Start `daemon` (counted in the metrics when they are on) and wait until it is ready."""
        daemon.observe = self._observe
        self.daemons.append(daemon)
        await self._start(daemon)

    async def _start(self, daemon: Daemon) -> None:
        await daemon.start()
        await daemon.wait_ready()
        log.info("%s is ready", daemon.name)

    async def _watch(self) -> None:
        """Wait for a stop request, restarting any daemon that exits meanwhile."""
        while not self.stopping.is_set():
            waits = {asyncio.create_task(d.wait_exit()): d for d in self.daemons}
            stop = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait([*waits, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in [*waits, stop]:
                if task not in done:
                    task.cancel()
            if stop in done:
                return
            for task in done:
                daemon = waits[task]
                await self._restart(daemon, task.result())

    def _next_delay(self, daemon: Daemon, returncode: int | None) -> float:
        """Count a crash; the back-off before the restart. A critical daemon over its budget
        raises; any other keeps being restarted, BACKOFF_MAX apart."""
        now = time.monotonic()
        crashes = [t for t in self._crashes.get(daemon.name, []) if now - t < RESTART_WINDOW]
        crashes.append(now)
        self._crashes[daemon.name] = crashes
        if len(crashes) <= RESTART_BUDGET:
            return float(min(BACKOFF_START * 2.0 ** (len(crashes) - 1), BACKOFF_MAX))
        if self._critical.get(daemon.name, True):
            raise DaemonError(
                daemon.name,
                f"exited {len(crashes)} times within {RESTART_WINDOW:.0f} s "
                f"(last exit code {returncode})",
                list(daemon.tail),
            )
        return BACKOFF_MAX

    async def _restart(self, daemon: Daemon, returncode: int | None) -> None:
        while True:
            await daemon.drain_output()
            delay = self._next_delay(daemon, returncode)
            log.error(
                "%s exited unexpectedly (code %s); restarting in %.1f s (%d/%d)",
                daemon.name,
                returncode,
                delay,
                len(self._crashes[daemon.name]),
                RESTART_BUDGET,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return
            daemon.restarts += 1
            try:
                await self._start(daemon)
                return
            except DaemonError as exc:  # counts as one more crash; the budget decides
                log.error("%s did not come back: %s", daemon.name, exc.reason)
                await daemon.stop()
                returncode = daemon.process.returncode if daemon.process else None

    async def _schedule(self, job: Job) -> None:
        """Run `job` at its time every day, or when its trigger file appears, until the
        supervisor stops."""
        runner = Daemon(job.name, job.argv, job.env, lambda line: LogRecord(job.name, line), _never)
        try:
            while True:
                if job.trigger is not None:
                    await _triggered(Path(job.trigger))
                else:
                    await asyncio.sleep(seconds_until(str(job.at), time.time()))
                log.info("running %s", job.name)
                await runner.start()
                code = await runner.wait_exit()
                await runner.drain_output()
                level = logging.INFO if code == 0 else logging.ERROR
                log.log(level, "%s ended (code %s)", job.name, code)
        finally:
            await runner.stop()

    def _tls_signature(self) -> tuple[tuple[int, int, int], ...]:
        found = []
        for name in self.plan.tls_watch:
            try:
                info = Path(name).stat()  # through ACME's `live` link: a new pair is a new inode
                found.append((info.st_ino, info.st_mtime_ns, info.st_size))
            except OSError:
                found.append((0, 0, 0))
        return tuple(found)

    async def _watch_tls(self) -> None:
        """Reload Postfix and Dovecot when the certificate or key changes on disk: new
        sessions get the new pair, open ones keep theirs (neither daemon restarts)."""
        loaded = seen = self._tls_signature()
        while True:
            await asyncio.sleep(TLS_WATCH_SECONDS)
            now = self._tls_signature()
            if now == seen and now != loaded:
                log.info("the TLS certificate changed: reloading Postfix and Dovecot")
                for command in self.plan.tls_reload:
                    await self._run_reload(command)
                for daemon in self.daemons:
                    if daemon.name in self.plan.tls_hangup and daemon.process is not None:
                        with contextlib.suppress(ProcessLookupError):
                            daemon.process.send_signal(signal.SIGHUP)
                loaded = now
            seen = now

    async def _run_reload(self, command: list[str]) -> None:
        env = self.plan.postfix.process.env
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await asyncio.wait_for(proc.communicate(), 60)
        except (OSError, TimeoutError) as exc:
            log.error("%s failed: %s", " ".join(command[:1] + command[-1:]), exc)
            return
        if proc.returncode != 0:
            text = output.decode(errors="replace").strip()
            log.error(
                "%s exited %s: %s", " ".join(command[:1] + command[-1:]), proc.returncode, text
            )

    async def stop_all(self) -> None:
        """Postfix first, gracefully (no mail is taken in that its helpers cannot finish),
        then every other process at once: none needs another to stop."""
        for daemon in self.daemons:
            if isinstance(daemon, Postfix):
                await daemon.graceful_stop(self.plan.stop_timeout)
        others = [daemon for daemon in self.daemons if not isinstance(daemon, Postfix)]
        await all_then_first_error(daemon.stop() for daemon in others)
        if self.syslog is not None:
            await self.syslog.stop()
        if self.metrics is not None:
            await self.metrics.stop()
