"""The worker's spam learner: takes what Dovecot spooled when users moved mail in or out of
Junk and teaches each user's own Bayes statistics in rspamd.

Moves never wait for rspamd (Dovecot only writes a file); while rspamd is down the files
stay and are learned when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from mailstack.spam.controller import ControllerUnavailable, Outcome, learn
from mailstack.spam.spool import BadSpoolFile, parse_entry, pending

log = logging.getLogger("mailstack.spam")

POLL_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


class SpamLearner:
    name = "spam learner"

    def __init__(self, spool: Path, controller: Path) -> None:
        self.spool = spool
        self.controller = controller
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = POLL_SECONDS
        while True:
            try:
                await self.learn_pending()
                delay = POLL_SECONDS
            except ControllerUnavailable as exc:
                log.warning("cannot learn now, trying again in %.0f s: %s", delay, exc)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            await asyncio.sleep(delay)

    async def learn_pending(self) -> int:
        """Learn every spooled message; returns how many were handled."""
        handled = 0
        for path in pending(self.spool):
            try:
                entry = parse_entry(path, path.read_bytes())
            except BadSpoolFile as exc:
                log.error("dropping %s", exc)
                path.unlink(missing_ok=True)
                continue
            except FileNotFoundError:
                continue
            result = await learn(self.controller, entry.kind, entry.user, entry.message)
            if result.outcome is Outcome.REFUSED:
                log.warning(
                    "rspamd did not learn %s for %s: %s", entry.kind, entry.user, result.reason
                )
            else:
                log.info("learned %s for %s (%s)", entry.kind, entry.user, result.outcome.value)
            path.unlink(missing_ok=True)
            handled += 1
        return handled
