"""rspamd and its Redis in the server profile: folders, files and the supervised processes.

Start order: Redis, then rspamd (it connects to Redis when its workers start), both before
Postfix, whose port-25 smtpd uses rspamd's milter socket. Neither is critical: while rspamd
is down Postfix's `milter_default_action = tempfail` answers 4xx and senders retry, so
nothing is lost and IMAP stays up; without Redis rspamd still scans, only statistics and
history are missing.

Who may reach which socket (folder owner:group, mode 0750; the sockets themselves 0666):
- `rspamd-milter/milter.sock` (_rspamd:postfix): Postfix's smtpd;
- `rspamd-api/controller.sock` (_rspamd:mailstack): mailstack's worker, for learning (the
  controller takes any command from a Unix-socket client);
- `rspamd-scan/normal.sock` (_rspamd:<mail group>): Dovecot's delivery, asking each
  recipient's own Bayes classifier;
- `rspamd/control.sock` (_rspamd:_rspamd, socket 0600 root): `rspamadm control`;
- `redis/redis.sock` (redis:_rspamd): rspamd's workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from mailstack.paths import Paths
from mailstack.render.rspamd import (
    REDIS_USER,
    RSPAMD_USER,
    RedisOptions,
    RspamdOptions,
    SpamPaths,
    redis_argv,
    render_redis,
    render_rspamd,
    rspamd_argv,
    spam_paths,
)
from mailstack.runtime.files import ensure_dir, materialise
from mailstack.runtime.orphans import stop_leftover
from mailstack.runtime.plan import Probe, Process
from mailstack.runtime.profile import WORKER_USER

log = logging.getLogger("mailstack.spam")

POSTFIX_GROUP = "postfix"

#: A cold start (empty regex cache) compiles the public-suffix list and the regex cache
#: before the milter socket opens: 15-30 s measured on two busy cores, more on a slower
#: machine. A warm start takes about a second.
RSPAMD_READY_TIMEOUT = 90.0
REDIS_READY_TIMEOUT = 30.0


def prepare_spam(
    paths: Paths,
    options: RspamdOptions | None = None,
    redis: RedisOptions | None = None,
    mail_group: str = "vmail",
) -> SpamPaths:
    """Stop what an earlier run left, make the folders with their owners, write the
    configuration of rspamd and Redis. Returns where everything is."""
    options = options or RspamdOptions()
    spam = spam_paths(paths)
    stop_leftover_rspamd(spam)
    stop_leftover(spam.redis_pidfile, "redis-server")
    ensure_dir(spam.config, 0o755)
    ensure_dir(spam.config / "local.d", 0o755)
    ensure_dir(spam.config / "override.d", 0o755)
    ensure_dir(spam.db, 0o750, RSPAMD_USER, RSPAMD_USER)
    if options.cache_dir is not None:
        ensure_dir(options.cache_dir, 0o750, RSPAMD_USER, RSPAMD_USER)
    ensure_dir(spam.run, 0o750, RSPAMD_USER, RSPAMD_USER)
    ensure_dir(spam.milter_run, 0o750, RSPAMD_USER, POSTFIX_GROUP)
    ensure_dir(spam.api_run, 0o750, RSPAMD_USER, WORKER_USER)
    ensure_dir(spam.scan_run, 0o750, RSPAMD_USER, mail_group)
    ensure_dir(spam.redis_data, 0o750, REDIS_USER, REDIS_USER)
    ensure_dir(spam.redis_run, 0o750, REDIS_USER, RSPAMD_USER)
    materialise(render_rspamd(spam, options))
    materialise(render_redis(spam, redis or RedisOptions()))
    return spam


def redis_process(spam: SpamPaths, env: dict[str, str]) -> Process:
    return Process(
        "redis",
        redis_argv(spam),
        dict(env),
        [Probe("unix", str(spam.redis_socket))],
        ready_timeout=REDIS_READY_TIMEOUT,
        critical=False,
    )


def rspamd_process(spam: SpamPaths, env: dict[str, str]) -> Process:
    """Ready when the milter, controller and normal worker accept connections."""
    # rspamd's Lua code reads these from the environment too; the command line sets them
    env = {k: v for k, v in env.items() if k not in _RSPAMD_PATH_VARIABLES}
    probes = [
        Probe("unix", str(spam.milter_socket)),
        Probe("unix", str(spam.controller_socket)),
        Probe("unix", str(spam.normal_socket)),
    ]
    return Process(
        "rspamd",
        rspamd_argv(spam),
        env,
        probes,
        ready_timeout=RSPAMD_READY_TIMEOUT,
        critical=False,
        own_group=True,  # its workers outlive a killed main process
        after=["redis"],  # its statistics and caches are there from the start
    )


_RSPAMD_PATH_VARIABLES = frozenset(
    {
        "CONFDIR",
        "LOCAL_CONFDIR",
        "DBDIR",
        "RUNDIR",
        "LOGDIR",
        "SHAREDIR",
        "PLUGINSDIR",
        "RULESDIR",
        "LUALIBDIR",
        "WWWDIR",
    }
)


# -- what an earlier run left -----------------------------------------------------------------


def _listening_inodes(path: Path) -> set[str]:
    """Inodes of the Unix sockets bound to `path` (several when old ones were unlinked)."""
    found = set()
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as table:
            for row in table:
                fields = row.split()
                if len(fields) >= 8 and fields[7] == str(path):
                    found.add(fields[6])
    except OSError:
        return set()
    return found


def rspamd_processes(spam: SpamPaths) -> list[int]:
    """rspamd processes holding this instance's control socket: the main process and every
    worker it forked (each inherits that socket), including orphans of a killed main."""
    inodes = _listening_inodes(spam.control_socket)
    if not inodes:
        return []
    targets = {f"socket:[{inode}]" for inode in inodes}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "comm").read_text().strip() != "rspamd":
                continue
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        if _fd_links(fds) & targets:
            found.append(int(entry.name))
    return sorted(found)


def _fd_links(fds: list[Path]) -> set[str]:
    """What each descriptor points at, skipping those closed while we look (a worker
    accepting and closing connections must not be missed for one vanished descriptor)."""
    links = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            links.add(str(fd.readlink()))
    return links


def stop_leftover_rspamd(spam: SpamPaths) -> list[int]:
    """Kill rspamd processes of this instance left by an earlier run.

    rspamd's workers outlive a main process killed with SIGKILL and keep serving the old
    sockets; rspamd in the foreground writes no pid file, so they are found by the control
    socket they all hold."""
    found = rspamd_processes(spam)
    if found:
        log.warning("stopping rspamd processes left over by an earlier run: %s", found)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    alive = found
    while alive and time.monotonic() < deadline:  # the kernel frees the sockets once gone
        time.sleep(0.02)
        alive = [pid for pid in alive if is_running(pid)]
    return found


def is_running(pid: int) -> bool:
    """Running, not gone and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
