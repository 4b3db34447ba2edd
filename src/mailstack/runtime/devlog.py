"""Run a command whose syslog(3) lines must reach mailstack: `python -I -S devlog.py DEVDIR --
COMMAND...` (the standard library only: the supervisor runs this file without site-packages).

OpenDKIM can only log through syslog(3), which always writes to `/dev/log`. When mailstack
cannot own the real `/dev/log` (a relocated MAILSTACK_ROOT, or a host whose syslog already
has it), this launcher gives the command a private mount namespace in which DEVDIR (holding
mailstack's log socket and bind mounts of null/zero/random/urandom) is mounted over /dev, then
execs it. Without the privilege to do that, it runs the command unchanged and says so.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
DEVICES = ("null", "zero", "random", "urandom")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount(libc: ctypes.CDLL, source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source else None
    if libc.mount(src, target.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def isolate_dev(devdir: str) -> None:
    """Enter a new mount namespace where `devdir` is /dev."""
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    _mount(libc, None, "/", MS_REC | MS_PRIVATE)
    for name in DEVICES:
        target = Path(devdir, name)
        target.touch(exist_ok=True)
        _mount(libc, f"/dev/{name}", str(target), MS_BIND)
    _mount(libc, devdir, "/dev", MS_BIND | MS_REC)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python -I -S devlog.py DEVDIR -- COMMAND [ARGS...]")
    devdir, command = argv[0], argv[2:]
    try:
        isolate_dev(devdir)
    except OSError as exc:
        print(
            f"cannot give {command[0]} a private /dev/log ({exc}); its syslog lines are lost",
            file=sys.stderr,
            flush=True,
        )
    os.execvp(command[0], command)  # noqa: S606 - argv list, no shell


if __name__ == "__main__":
    main(sys.argv[1:])
