"""Deleting queued messages: the worker asks, root does it.

`postsuper -d` needs root, and the worker is not root. The worker leaves one empty file per
queue id in a folder of its own (`<trigger>.d/<ID>`), then creates the trigger file; the
supervisor, seeing the trigger, runs `mailstack queue delete --requested` as root, which
reads the names, checks each again, hands the valid ones to one `postsuper -d -` and
removes the files. A request made while that runs creates the trigger again: none is lost.

Root opens the worker's folder without following links and removes names relative to it,
so a folder swapped for a link cannot point root's unlink elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path

from mailstack.mailqueue.ids import check_queue_id, is_queue_id

log = logging.getLogger(__name__)

#: one run of postsuper handles at most this many ids; the rest wait for the next trigger
MAX_PER_RUN = 10_000


def pending_folder(trigger: Path) -> Path:
    """Where the queue ids wait, beside the trigger file."""
    return trigger.with_name(trigger.name + ".d")


class DeleteRequests:
    """The worker's side: ask for messages to be deleted."""

    def __init__(self, trigger: Path) -> None:
        self.trigger = trigger
        self.folder = pending_folder(trigger)

    def request(self, queue_id: str) -> None:
        name = check_queue_id(queue_id)
        self.folder.mkdir(mode=0o700, exist_ok=True)
        (self.folder / name).touch()
        self.trigger.touch()  # after the id: the job that sees it also sees the id


def take_requested(trigger: Path) -> list[str]:
    """Root's side: the valid queue ids waiting beside `trigger`, their files removed.
    Names that are no queue id are removed and logged, never used."""
    try:
        fd = os.open(pending_folder(trigger), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return []
    try:
        taken: list[str] = []
        # by descriptor (opened without following links): pathlib cannot list one
        for name in sorted(os.listdir(fd))[:MAX_PER_RUN]:  # noqa: PTH208
            if is_queue_id(name):
                taken.append(name)
            else:
                log.warning("ignored a queue delete request for %r: not a queue id", name[:50])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
        return taken
    finally:
        os.close(fd)


def postsuper_delete(config_dir: Path, queue_ids: list[str]) -> str:
    """Delete the messages with one `postsuper -d -` (ids on stdin); its report lines.
    Raises OSError when postsuper cannot run or fails."""
    ids = [check_queue_id(queue_id) for queue_id in queue_ids]
    if not ids:
        return ""
    result = subprocess.run(
        ["postsuper", "-c", str(config_dir), "-d", "-"],
        input="".join(f"{queue_id}\n" for queue_id in ids),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise OSError(f"postsuper -d failed (exit {result.returncode}): {output}")
    return output
