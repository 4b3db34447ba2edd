"""Bring a datastore that was down at start to the current schema once it answers.

Only a worker started with `--migrate` runs this (the supervisor could not reach the store),
so Alembic is imported only then. Until it succeeds, lookups answer TEMP and Postfix 4xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import Engine

log = logging.getLogger(__name__)

RETRY_SECONDS = 10.0


async def migrate_when_reachable(
    engine: Engine, stopping: asyncio.Event, retry: float = RETRY_SECONDS
) -> None:
    from mailstack.store.engine import migrate
    from mailstack.store.errors import StoreUnavailable

    logging.getLogger("alembic").setLevel(logging.WARNING)
    while not stopping.is_set():
        try:
            await asyncio.to_thread(migrate, engine)
        except StoreUnavailable as exc:
            log.warning("datastore still unreachable (%s); retrying in %.0f s", exc, retry)
        else:
            log.info("datastore reachable and migrated: lookups answer again")
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), retry)
