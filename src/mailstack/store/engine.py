"""Database URLs, engines and migrations.

One engine per process: the lookup service, the CLI and the admin API each call
`create_engine_for()` once and share it. Schema changes are Alembic migrations shipped
inside the package and applied from code (`migrate()`), so no alembic.ini is needed.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from mailstack.settings.locations import default_database
from mailstack.store.errors import InvalidInput, StoreUnavailable

DATABASE_URL_VARIABLE = "MAILSTACK_DATABASE_URL"
CONNECT_TIMEOUT_SECONDS = 5
SQLITE_BUSY_TIMEOUT_MS = 5000


def database_url(value: str | os.PathLike[str] | None = None) -> str:
    """Turn a file path or URL (or MAILSTACK_DATABASE_URL, or the default) into a URL.

    A plain path means SQLite. `postgresql://` and `postgres://` get the psycopg (v3) driver,
    which is the one mailstack installs.
    """
    raw = os.fspath(value) if value is not None else default_database(os.environ)
    if "://" not in raw:
        return f"sqlite:///{Path(raw).expanduser().absolute()}"
    for prefix in ("postgresql://", "postgres://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix) :]
    return raw


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets lookups read while the CLI writes; foreign keys make cascades work."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def create_engine_for(value: str | os.PathLike[str] | None = None, **kwargs: Any) -> Engine:
    """Create the process's engine for a URL or SQLite path (see `database_url`)."""
    url_text = database_url(value)
    try:
        url = make_url(url_text)
    except ArgumentError as exc:
        raise InvalidInput(DATABASE_URL_VARIABLE, f"not a database URL ({exc})") from None
    backend = url.get_backend_name()
    options: dict[str, Any] = {"pool_pre_ping": backend != "sqlite"}
    if backend == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    elif backend == "postgresql":
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    else:
        raise InvalidInput(DATABASE_URL_VARIABLE, f"unsupported database {backend!r}")
    options.update(kwargs)
    engine = sa_create_engine(url, **options)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


#: The newest migration's revision id; a test checks it against Alembic's own head.
HEAD_REVISION = "0006"


def at_head(engine: Engine) -> bool:
    """True when the schema is already current: one query, and no Alembic import (which is
    most of an admin command's start-up time)."""
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:
        return False
    return [row[0] for row in rows] == [HEAD_REVISION]


#: pg_advisory_xact_lock key of schema migrations ("mailstack" in ASCII, as a number).
MIGRATION_LOCK_KEY = 0x6D61696C737461


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """One migration at a time per database, across processes (a starting server and an
    admin command): SQLite takes a file lock beside the database; PostgreSQL takes an
    advisory lock inside the migration's own transaction (see `migrate`)."""
    database = engine.url.database
    if engine.url.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        yield
        return
    fd = os.open(f"{database}.migrate-lock", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` with the migrations shipped in the package."""
    if revision == "head" and at_head(engine):
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "mailstack.store:migrations")
    try:
        with migration_lock(engine), engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)  # a no-op if another process just did it
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable(f"could not migrate the database: {exc}") from exc


def open_engine(value: str | os.PathLike[str] | None = None, **kwargs: Any) -> Engine:
    """Create the engine and migrate to the newest schema: what writers call at start-up.

    Unlike `create_engine_for` (what readers use), this also creates a SQLite file's folder.
    """
    engine = create_engine_for(value, **kwargs)
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (
        None,
        "",
        ":memory:",
    ):
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    migrate(engine)
    return engine
