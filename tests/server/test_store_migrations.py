"""Alembic migrations: shipped in the package, applied from code, matching the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from mailstack.store import InvalidInput, MailStore, create_engine_for, database_url, migrate
from mailstack.store.engine import HEAD_REVISION
from mailstack.store.models import Base


def test_migrations_match_the_models(store_url: str) -> None:
    """`upgrade head` builds exactly the schema the ORM models describe."""
    engine = create_engine_for(store_url)
    try:
        migrate(engine)
        migrate(engine)  # a second run is a no-op
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert diff == []
        assert version == HEAD_REVISION
        tables = inspect(engine).get_table_names()
        assert "sieve_scripts" in tables
        assert {"greylist_triplets", "greylist_clients", "greylist_allow"} <= set(tables)
    finally:
        engine.dispose()


def test_head_revision_constant_is_alembics_head() -> None:
    """The fast path (`at_head`) compares with HEAD_REVISION; a new migration must move it."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from mailstack.store.engine import HEAD_REVISION

    config = Config()
    config.set_main_option("script_location", "mailstack.store:migrations")
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


def test_open_creates_the_sqlite_folder(tmp_path: Path) -> None:
    store = MailStore.open(tmp_path / "new" / "folder" / "mail.db")
    try:
        assert store.list_domains() == []
    finally:
        store.close()
    assert (tmp_path / "new" / "folder" / "mail.db").exists()


def test_database_urls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A path means SQLite, postgresql:// gets psycopg 3, the variable is the fallback."""
    assert database_url(tmp_path / "a.db") == f"sqlite:///{tmp_path}/a.db"
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    monkeypatch.setenv("MAILSTACK_DATABASE_URL", "postgresql://u@h/x")
    assert database_url() == "postgresql+psycopg://u@h/x"
    monkeypatch.delenv("MAILSTACK_DATABASE_URL")
    assert database_url() == "sqlite:////var/lib/mailstack/mailstack.db"
    with pytest.raises(InvalidInput, match="MAILSTACK_DATABASE_URL: unsupported"):
        create_engine_for("mysql://u@h/db")
