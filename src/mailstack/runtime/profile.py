"""What both profiles' plans share: the worker's user, OpenDKIM with its log receiver, and
the settings every profile has (log format, stop timeout, metrics)."""

from __future__ import annotations

import pwd
from pathlib import Path
from typing import Protocol

from mailstack.errors import ConfigError, Problem
from mailstack.paths import Paths
from mailstack.runtime.plan import Plan, PostfixPlan, Process
from mailstack.runtime.supervisor import opendkim_process, syslog_path
from mailstack.settings.values import HostPort

#: The system user of mailstack's Python worker (install.sh and the image create it).
WORKER_USER = "mailstack"


def worker_account(variable: str) -> pwd.struct_passwd:
    """The worker's system user; a clear configuration error, naming `variable`, without it."""
    try:
        return pwd.getpwnam(WORKER_USER)
    except KeyError:
        raise ConfigError(
            [
                Problem(
                    variable,
                    f"needs the system user {WORKER_USER!r}, which runs mailstack's Python "
                    "services without root (scripts/install.sh and the image create it)",
                )
            ]
        ) from None


def opendkim_with_log(paths: Paths, env: dict[str, str]) -> tuple[Process, Path]:
    """OpenDKIM, and where its syslog lines must be received."""
    syslog, isolate = syslog_path(paths.root, paths.private_dev)
    config = paths.opendkim_config / "opendkim.conf"
    private_dev = paths.private_dev if isolate else None
    return opendkim_process(config, paths.opendkim_socket, env, private_dev), syslog


class CommonSettings(Protocol):
    @property
    def log_format(self) -> str: ...

    @property
    def force_color(self) -> bool: ...

    @property
    def stop_timeout(self) -> float: ...

    @property
    def metrics_listen(self) -> HostPort | None: ...


def assemble_plan(
    profile: str,
    settings: CommonSettings,
    processes: list[Process],
    postfix: PostfixPlan,
    *,
    ready_on: HostPort | None,
    syslog: Path | None,
    secrets: list[str],
) -> Plan:
    metrics = settings.metrics_listen
    return Plan(
        profile=profile,
        processes=processes,
        postfix=postfix,
        ready_message=f"ready: accepting mail on {ready_on}",
        stop_timeout=settings.stop_timeout,
        log_format=settings.log_format,
        force_color=settings.force_color,
        syslog_path=str(syslog) if syslog is not None else None,
        metrics_listen=str(metrics) if metrics is not None else None,
        secrets=secrets,
    )
