"""Helpers of the security suite: a seeded server profile, the processes under a running
mailstack, their memory, and the log lines that mean something crashed.

Every server is started through tests.server.mailserver.running_server, which stops it
(and kills whatever is left of its daemons) however the test ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from mailstack.store import MailStore
from tests.helpers import MAILSTACK, private_root
from tests.server.mailserver import (
    PASSWORD,
    MailServer,
    Ports,
    running_server,
    server_env,
)

USERS = ("alice@example.com", "bob@example.com")
MiB = 1024 * 1024

#: Log text that only a crash, a hang-up by a watchdog or an unhandled error writes.
CRASH_MARKERS = (
    "exited unexpectedly",  # the supervisor restarted a daemon
    "Traceback",
    "unexpected error",  # a Python listener's handler failed
    "killed by signal",  # a Postfix child crashed
    "Panic:",  # Dovecot
)


@contextlib.contextmanager
def server_profile(ports: Ports, password: str = PASSWORD, **extra: str) -> Iterator[MailServer]:
    """`mailstack run --profile server` with example.com, alice and bob (`password`)."""
    with private_root() as root:
        store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
        try:
            store.add_domain("example.com")
            for user in USERS:
                store.add_user(user, password)
        finally:
            store.close()
        with running_server(root, server_env(root, ports, **extra)) as server:
            yield server


def crash_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(m in line for m in CRASH_MARKERS)]


def children(pid: int) -> list[int]:
    """The processes any thread of `pid` started (the kernel's own list, no /proc walk)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def process_tree(top: int) -> list[int]:
    """`top` and every process below it."""
    found, todo = [], [top]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children(pid))
    return found


def daemons(top: int) -> set[int]:
    """The processes `top` started itself (worker, OpenDKIM, Dovecot, Postfix's master)."""
    return set(children(top))


def read_proc(pid: int, name: str) -> bytes:
    """/proc/<pid>/<name>, or b"" for a process that has gone."""
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def worker_pid(server: MailServer) -> int:
    """The Python worker (lookup service, ManageSieve, milter) under this server."""
    assert server.proc is not None
    for pid in process_tree(server.proc.pid):
        if b"mailstack.worker" in read_proc(pid, "cmdline").split(b"\0"):
            return pid
    raise AssertionError(f"no worker process under {server.proc.pid}")


def vm_rss(pid: int) -> int:
    """Resident memory of one process, in bytes."""
    for line in read_proc(pid, "status").decode().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def health(server: MailServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAILSTACK, "health", "--profile", "server"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def unix_socket(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except OSError:
        sock.close()
        raise
    return sock
