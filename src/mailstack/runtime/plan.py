"""What a profile runs, as plain data: the supervisor's only input.

`mailstack run` validates the settings, prepares files and keys, and turns the profile into a
`Plan`: every process with its argv, environment, readiness probes and start order, plus the
two master.cf texts Postfix needs (accepting, and closing for a graceful stop). It then
replaces itself with `python -m mailstack.runtime.supervise`, which reads the plan and needs
none of the heavy libraries (pydantic, typer, cryptography, SQLAlchemy) that preparing did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ProbeKind = Literal["unix", "socket-file", "tcp", "smtp"]
LogParser = Literal["plain", "postfix", "dovecot", "worker"]


@dataclass(frozen=True)
class Probe:
    """One readiness check: a Unix socket accepts, a TCP port accepts, or SMTP says 220.

    `socket-file`: the Unix socket exists, without connecting; for a socket its daemon makes
    in the same step as one that another probe connects to (a connection would start a
    process that then idles for a minute: Dovecot's LMTP)."""

    kind: ProbeKind
    target: str  # a socket path, or host:port


@dataclass(frozen=True)
class Process:
    """A supervised child, ready when every probe passes. The plan's processes start
    together, each once those named in `after` are ready; Postfix starts when all are."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    probes: list[Probe]
    ready_timeout: float = 30.0
    log_parser: LogParser = "plain"
    #: False for a helper whose absence only delays mail (the worker: Postfix answers 4xx
    #: while it is down): it is restarted for ever, at most every 30 s, and never takes the
    #: MX and IMAP down with it. A critical process that keeps crashing stops everything.
    critical: bool = True
    #: Started in a process group of its own, which is killed once it exited: for a daemon
    #: whose forked workers outlive a crashed main process (rspamd) and would keep serving.
    own_group: bool = False
    after: list[str] = field(default_factory=list)
    #: A Unix socket connected to after SIGTERM (every 0.1 s until it exits), for a daemon
    #: that notices a stop only when its listener wakes (OpenDKIM: else up to 5 s later).
    wake_on_stop: str | None = None


@dataclass(frozen=True)
class PostfixPlan:
    """The Postfix master, started last and stopped first, gracefully."""

    process: Process
    config_dir: str
    queue_dir: str
    master_cf_accepting: str
    master_cf_closing: str
    listeners: list[str]  # host:port, checked free before the master starts


@dataclass(frozen=True)
class Job:
    """A command the supervisor runs every day at `at` (HH:MM, local time), or whenever the
    file `trigger` appears (it is removed first: an unprivileged process asks for a root
    task by creating it). Its output goes to the log like a daemon's; one run at a time."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    at: str | None = None
    trigger: str | None = None


@dataclass(frozen=True)
class Plan:
    profile: str
    processes: list[Process]  # all ready before Postfix starts; stopped after it, together
    postfix: PostfixPlan
    ready_message: str
    stop_timeout: float
    log_format: str = "plain"
    force_color: bool = False
    syslog_path: str | None = None  # where daemons that only log to syslog send their lines
    metrics_listen: str | None = None
    secrets: list[str] = field(default_factory=list, repr=False)  # redacted from every line
    jobs: list[Job] = field(default_factory=list)
    #: TLS files whose change (a renewal, a replaced Secret) runs `tls_reload`'s commands
    tls_watch: list[str] = field(default_factory=list)
    tls_reload: list[list[str]] = field(default_factory=list)
    tls_hangup: list[str] = field(default_factory=list)  # processes told by SIGHUP, by name
    delivery_log: str | None = None  # folder of the users' delivery log (mailstack.deliverylog)


def dump(plan: Plan) -> bytes:
    return json.dumps(asdict(plan)).encode()


def _process(data: dict[str, Any]) -> Process:
    return Process(
        name=data["name"],
        argv=list(data["argv"]),
        env=dict(data["env"]),
        probes=[Probe(p["kind"], p["target"]) for p in data["probes"]],
        ready_timeout=float(data["ready_timeout"]),
        log_parser=data["log_parser"],
        critical=bool(data["critical"]),
        own_group=bool(data["own_group"]),
        after=list(data.get("after", [])),
        wake_on_stop=data.get("wake_on_stop"),
    )


def load(raw: bytes) -> Plan:
    data = json.loads(raw)
    postfix = data["postfix"]
    return Plan(
        profile=data["profile"],
        processes=[_process(p) for p in data["processes"]],
        postfix=PostfixPlan(
            process=_process(postfix["process"]),
            config_dir=postfix["config_dir"],
            queue_dir=postfix["queue_dir"],
            master_cf_accepting=postfix["master_cf_accepting"],
            master_cf_closing=postfix["master_cf_closing"],
            listeners=list(postfix["listeners"]),
        ),
        ready_message=data["ready_message"],
        stop_timeout=float(data["stop_timeout"]),
        log_format=data["log_format"],
        force_color=bool(data["force_color"]),
        syslog_path=data["syslog_path"],
        metrics_listen=data["metrics_listen"],
        secrets=list(data["secrets"]),
        jobs=[
            Job(j["name"], list(j["argv"]), dict(j["env"]), j["at"], j["trigger"])
            for j in data["jobs"]
        ],
        tls_watch=list(data.get("tls_watch", [])),
        tls_reload=[list(command) for command in data.get("tls_reload", [])],
        tls_hangup=list(data.get("tls_hangup", [])),
        delivery_log=data.get("delivery_log"),
    )
