"""Alembic environment: runs on the connection handed over by `engine.migrate()`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from mailstack.store.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if _connection is None:
    raise RuntimeError("run migrations through mailstack.store.engine.migrate()")
_run(_connection)
