"""Run a command as a child subreaper; when it ends, stop whatever it left running.

The test suite starts real daemons, and some fork into the background (Postfix's master).
A test worker that is killed cannot stop its daemons: orphaned, they would be adopted by
init and could hold the CI job's output open long after the tests ended. Under this
wrapper they are adopted by it instead (Linux PR_SET_CHILD_SUBREAPER), reaped as they
exit, as init would, and killed once the command has ended; each one is named on stderr.
The exit status is the command's.

    python3 scripts/reap.py COMMAND [ARG...]
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path

from mailstack.runtime.postfix import processes

PR_SET_CHILD_SUBREAPER = 36
GIVE_UP_AFTER = 10.0  # seconds to get rid of what was left


def children() -> list[int]:
    """Our children now: the command, or processes orphaned under us."""
    me = os.getpid()
    return [process.pid for process in processes() if process.ppid == me]


def describe(pid: int) -> str:
    """`pid` and its command line. A process caught in the middle of an exec (or already
    exited, not yet reaped) shows an empty one for a moment: ask again, then take the
    kernel's short name."""
    proc = Path(f"/proc/{pid}")
    try:
        for _ in range(20):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").strip()
            if cmdline:
                return f"pid {pid}: {cmdline.decode(errors='replace')[:200]}"
            time.sleep(0.01)
        return f"pid {pid}: [{(proc / 'comm').read_text().strip()}]"
    except OSError:
        return f"pid {pid}"


def reap_exited() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_leftovers() -> int:
    """Kill what the command left (and their process groups); how many there were."""
    seen: set[int] = set()
    deadline = time.monotonic() + GIVE_UP_AFTER
    while time.monotonic() < deadline:
        reap_exited()
        left = children()
        if not left:
            break
        for pid in left:
            if pid not in seen:
                seen.add(pid)
                print(
                    f"reap: killing a process the tests left running: {describe(pid)}",
                    file=sys.stderr,
                )
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return len(seen)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:  # not Linux: orphans go to init
        print("reap: cannot become a subreaper; leftovers will not be stopped", file=sys.stderr)
    command = os.posix_spawnp(argv[0], argv, os.environ)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda sig, _frame: os.kill(command, sig))
    while True:  # reap every child as it exits, as init would; stop when the command does
        pid, status = os.wait()
        if pid == command:
            break
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    code = os.waitstatus_to_exitcode(status)
    if kill_leftovers():
        print("reap: a test did not stop every daemon it started (see above)", file=sys.stderr)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
