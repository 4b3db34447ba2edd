"""Write rendered files atomically, with their mode and owner."""

from __future__ import annotations

import os
import pwd
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from mailstack.render.files import RenderedFile


def write_atomic(path: Path, content: str, mode: int = 0o644, owner: str | None = None) -> None:
    """Write to `path.new`, fsync, then rename: readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            user = pwd.getpwnam(owner)
            os.fchown(fd, user.pw_uid, user.pw_gid)
        os.write(fd, content.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    # Postfix waits until a table or main.cf is a couple of seconds old before trusting it
    # (it could be half written); ours never is, being renamed into place whole.
    past = time.time() - 10
    os.utime(path, (past, past))


def materialise(files: Iterable[RenderedFile]) -> list[Path]:
    """Write every file; `keep_existing` files are only written when missing."""
    written = []
    for item in files:
        if item.keep_existing and item.path.exists():
            continue
        write_atomic(item.path, item.content, item.mode, item.owner)
        written.append(item.path)
    return written


def ensure_dir(
    path: Path, mode: int = 0o755, owner: str | None = None, group: str | None = None
) -> None:
    """Create `path` (and parents) and set its mode and ownership."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if owner is not None:
        shutil.chown(path, owner, group)
    elif group is not None:
        shutil.chown(path, group=group)
