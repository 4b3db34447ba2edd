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
from typing import TYPE_CHECKING, Any

from mailstack.errors import DaemonError, ExitCode
from mailstack.paths import Paths
from mailstack.runtime.daemon import Daemon
from mailstack.runtime.logparse import LineObserver, LogRecord
from mailstack.runtime.postfix import Postfix
from mailstack.runtime.prepare import Prepared, child_environment
from mailstack.runtime.probes import unix_ready
from mailstack.runtime.syslog import SyslogReceiver
from mailstack.settings.model import RelaySettings

if TYPE_CHECKING:
    from mailstack.metrics import MetricsServer

log = logging.getLogger("mailstack.supervisor")

RESTART_BUDGET = 5
RESTART_WINDOW = 300.0
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0


def syslog_path(paths: Paths) -> tuple[Path, bool]:
    """Where OpenDKIM's syslog lines arrive, and whether it needs a private /dev to get there."""
    real = Path("/dev/log")
    if paths.root == Path("/") and not real.exists():
        return real, False
    return paths.private_dev / "log", True


def opendkim_daemon(settings: RelaySettings, paths: Paths, isolate: bool) -> Daemon:
    argv = ["opendkim", "-f", "-x", str(paths.opendkim_config / "opendkim.conf")]
    if isolate:
        devdir = str(paths.private_dev)
        argv = [sys.executable, "-m", "mailstack.runtime.devlog", devdir, "--", *argv]
    return Daemon(
        name="opendkim",
        argv=argv,
        env=child_environment(settings, paths),
        parse_line=lambda line: LogRecord("opendkim", line, level="info"),
        probe=lambda: unix_ready(paths.opendkim_socket),
        ready_timeout=15.0,
    )


class Supervisor:
    """Owns the daemons of one `mailstack run`."""

    profile = "relay"

    def __init__(self, settings: RelaySettings, paths: Paths, prepared: Prepared) -> None:
        self.settings = settings
        self.paths = paths
        self.prepared = prepared
        self.stopping = asyncio.Event()
        self.syslog: SyslogReceiver | None = None
        self.daemons: list[Daemon] = []
        self.hop: Any = None
        self.metrics: MetricsServer | None = None
        self._observe: LineObserver | None = None
        self._crashes: dict[str, list[float]] = {}

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._request_stop, signum)
        try:
            await self._start_all()
            log.info("ready: accepting mail on %s", self.settings.listen_submission)
            await self._watch()
            return ExitCode.OK
        finally:
            await self._stop_all()

    def _request_stop(self, signum: int) -> None:
        if not self.stopping.is_set():
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.stopping.set()

    def _start_metrics(self) -> None:
        """Serve /metrics and count mail events in the log pipeline, when asked to.

        Imported here, not at the top: prometheus_client costs start-up time and memory that a
        relay without MAILSTACK_METRICS_LISTEN should not pay.
        """
        address = self.settings.metrics_listen
        if address is None:
            return
        from mailstack.metrics import relay_metrics

        counter, self.metrics = relay_metrics(
            address, self.paths.postfix_queue, lambda: tuple(self.daemons), self.profile
        )
        self._observe = counter.observe
        self.metrics.start()
        log.info("serving metrics on http://%s/metrics", address)

    async def _start_all(self) -> None:
        self._start_metrics()
        if self.prepared.dkim_enabled:
            path, isolate = syslog_path(self.paths)
            self.syslog = SyslogReceiver(path, observe=self._observe)
            await self.syslog.start()
            opendkim = opendkim_daemon(self.settings, self.paths, isolate)
            opendkim.observe = self._observe
            self.daemons.append(opendkim)
            await self._start(opendkim)
        if self.settings.xoauth2_enabled:
            from mailstack.xoauth2 import XOAuth2Hop, config_from_settings

            self.hop = XOAuth2Hop(
                config_from_settings(
                    self.settings,
                    self.paths.postfix_queue,
                    listen_port=self.settings.xoauth2_hop_port,
                )
            )
            await self.hop.start()
            log.info("XOAUTH2 hop listening on 127.0.0.1:%s", self.settings.xoauth2_hop_port)
        postfix = Postfix(self.settings, self.paths, child_environment(self.settings, self.paths))
        postfix.observe = self._observe
        self.daemons.append(postfix)
        await self._start(postfix)
        await postfix.flush_deferred()

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

    async def _restart(self, daemon: Daemon, returncode: int) -> None:
        await daemon.drain_output()
        now = time.monotonic()
        crashes = [t for t in self._crashes.get(daemon.name, []) if now - t < RESTART_WINDOW]
        crashes.append(now)
        self._crashes[daemon.name] = crashes
        if len(crashes) > RESTART_BUDGET:
            raise DaemonError(
                daemon.name,
                f"exited {len(crashes)} times within {RESTART_WINDOW:.0f} s "
                f"(last exit code {returncode})",
                list(daemon.tail),
            )
        delay = min(BACKOFF_START * 2 ** (len(crashes) - 1), BACKOFF_MAX)
        log.error(
            "%s exited unexpectedly (code %s); restarting in %.1f s (%d/%d)",
            daemon.name,
            returncode,
            delay,
            len(crashes),
            RESTART_BUDGET,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)
        if self.stopping.is_set():
            return
        daemon.restarts += 1
        await self._start(daemon)

    async def _stop_all(self) -> None:
        for daemon in reversed(self.daemons):
            if isinstance(daemon, Postfix):
                await daemon.graceful_stop(self.settings.stop_timeout)
            else:
                await daemon.stop()
        if self.hop is not None:
            await self.hop.stop()
        if self.syslog is not None:
            await self.syslog.stop()
        if self.metrics is not None:
            await self.metrics.stop()
