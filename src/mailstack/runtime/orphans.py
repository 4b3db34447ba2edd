"""Children must not outlive mailstack, even when it is killed with SIGKILL.

Each child is started with a parent-death signal (Linux `PR_SET_PDEATHSIG`): when the
supervisor dies, the kernel sends the child SIGTERM. The kernel clears that setting when a
daemon forks itself into the background (Postfix's master) or changes its user id
(OpenDKIM), so those are found again by their pid files on the next start and stopped
before anything binds their ports and sockets.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child (or a process that just changed its user): get `signum` when the parent
    dies. Meant as `preexec_fn`, so it must not log or allocate much."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


def stop_leftover(pidfile: Path, command: str) -> bool:
    """Stop the process named in `pidfile`, and its process group when it leads one, if it
    still runs `command` (a previous run's, whose parent was killed); True if one was."""
    try:
        pid = int(pidfile.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return False
    if comm != command or pid == os.getpid():
        return False
    log.warning("stopping %s (pid %d) left over by an earlier run", command, pid)
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid and pid != os.getpgid(0):
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    for _ in range(100):  # the kernel frees its ports once it is gone
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.02)
    return True
