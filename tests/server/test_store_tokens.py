"""API tokens and a user's own aliases in the service layer, on SQLite and PostgreSQL;
and the token table's migration (0003) over a database that already holds data."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from mailstack.store import (
    Conflict,
    Forbidden,
    InvalidInput,
    MailStore,
    NotFound,
    create_engine_for,
    migrate,
)
from mailstack.store.tokens import PREFIX, hash_token

PASSWORD = "correct horse battery"


@pytest.fixture
def populated(store: MailStore) -> MailStore:
    store.add_domain("example.com")
    store.add_user("alice@example.com", PASSWORD)
    store.add_user("bob@example.com", PASSWORD)
    return store


def _stored_rows(store: MailStore) -> list[tuple[str, ...]]:
    with store.engine.connect() as conn:
        return [tuple(map(str, row)) for row in conn.execute(text("SELECT * FROM api_tokens"))]


def test_token_is_shown_once_and_stored_hashed(populated: MailStore) -> None:
    """The plain token appears nowhere in the table; its SHA-256 does, and it authenticates."""
    info, secret = populated.create_token("ci", None)
    assert secret.startswith(PREFIX)
    assert len(secret) > 40
    assert (info.name, info.user, info.admin) == ("ci", None, True)
    rows = _stored_rows(populated)
    assert len(rows) == 1
    assert not any(secret in cell for cell in rows[0])
    assert hash_token(secret) in rows[0]
    found = populated.authenticate_token(secret)
    assert found is not None
    assert (found.name, found.user) == ("ci", None)


def test_user_token_acts_for_its_user(populated: MailStore) -> None:
    info, secret = populated.create_token("alice-phone", "Alice@Example.COM")
    assert info.user == "alice@example.com"
    found = populated.authenticate_token(secret)
    assert found is not None
    assert found.user == "alice@example.com"
    assert not found.admin
    assert [(t.name, t.user) for t in populated.list_tokens()] == [
        ("alice-phone", "alice@example.com")
    ]


def test_bad_unknown_and_revoked_tokens_do_not_authenticate(populated: MailStore) -> None:
    _, secret = populated.create_token("ci")
    assert populated.authenticate_token(secret + "x") is None
    assert populated.authenticate_token("") is None
    assert populated.authenticate_token("Bearer " + secret) is None
    assert populated.authenticate_token(PREFIX + "é" * 10) is None
    assert populated.authenticate_token(PREFIX + "a" * 1000) is None
    populated.revoke_token("ci")
    assert populated.authenticate_token(secret) is None
    assert populated.list_tokens() == []
    with pytest.raises(NotFound, match=r"token ci does not exist"):
        populated.revoke_token("ci")


def test_disabled_or_removed_user_loses_its_tokens(populated: MailStore) -> None:
    _, secret = populated.create_token("alice", "alice@example.com")
    populated.disable_user("alice@example.com")
    assert populated.authenticate_token(secret) is None
    populated.enable_user("alice@example.com")
    assert populated.authenticate_token(secret) is not None
    populated.remove_user("alice@example.com")
    assert populated.authenticate_token(secret) is None
    assert populated.list_tokens() == []


def test_token_names_and_owners_are_checked(populated: MailStore) -> None:
    populated.create_token("ci")
    with pytest.raises(Conflict, match=r"token ci already exists"):
        populated.create_token("ci", "alice@example.com")
    with pytest.raises(NotFound, match=r"user carol@example.com does not exist"):
        populated.create_token("carol", "carol@example.com")
    with pytest.raises(InvalidInput, match=r"^user: "):
        populated.create_token("x", "not an address")
    for bad in ("", "-x", "has space", "a/b", "x" * 65):
        with pytest.raises(InvalidInput, match=r"^name: "):
            populated.create_token(bad)
    assert [t.name for t in populated.list_tokens()] == ["ci"]


def test_own_aliases(populated: MailStore) -> None:
    """A user adds new addresses of their own domain for themselves, never someone else's."""
    populated.add_alias("team@example.com", ["alice@example.com", "bob@example.com"])
    populated.add_alias("postmaster@example.com", "bob@example.com")
    info = populated.add_own_alias("alice@example.com", "Shop@Example.com")
    assert (info.source, info.targets) == ("shop@example.com", ("alice@example.com",))
    mine = populated.aliases_delivering_to("alice@example.com")
    assert [a.source for a in mine] == ["shop@example.com", "team@example.com"]
    assert mine[1].targets == ("alice@example.com", "bob@example.com")
    with pytest.raises(Conflict, match=r"already exists"):
        populated.add_own_alias("alice@example.com", "team@example.com")
    with pytest.raises(Conflict, match=r"user's address"):
        populated.add_own_alias("alice@example.com", "bob@example.com")
    for role in ("admin", "Postmaster", "abuse+x", "webmaster", "hostmaster"):
        with pytest.raises(Forbidden, match=r"role address"):
            populated.add_own_alias("alice@example.com", f"{role}@example.com")
    with pytest.raises(Forbidden, match=r"catch-all"):
        populated.add_own_alias("alice@example.com", "@example.com")
    populated.add_domain("example.org")
    with pytest.raises(Forbidden, match=r"own domain example.com"):
        populated.add_own_alias("alice@example.com", "alice@example.org")
    with pytest.raises(Forbidden, match=r"does not deliver to alice@example.com"):
        populated.leave_alias("alice@example.com", "postmaster@example.com")
    populated.leave_alias("alice@example.com", "team@example.com")
    populated.leave_alias("alice@example.com", "shop@example.com")
    assert populated.aliases_delivering_to("alice@example.com") == []
    assert [(a.source, a.targets) for a in populated.list_aliases()] == [
        ("postmaster@example.com", ("bob@example.com",)),
        ("team@example.com", ("bob@example.com",)),
    ]
    with pytest.raises(NotFound):
        populated.leave_alias("alice@example.com", "shop@example.com")


def test_sieve_checker_refuses_before_storing(populated: MailStore) -> None:
    def checker(text_: str) -> str | None:
        return None if "keep" in text_ else "line 1: unknown command 'frobnicate'\nline 2: more"

    with pytest.raises(InvalidInput, match=r"^content: .*does not compile.*frobnicate'; line 2"):
        populated.put_script("alice@example.com", "f", "frobnicate;", checker=checker)
    assert populated.list_scripts("alice@example.com") == []
    populated.put_script("alice@example.com", "f", "keep;", checker=checker)
    assert [s.name for s in populated.list_scripts("alice@example.com")] == ["f"]


def test_token_migration_over_existing_data(store_url: str) -> None:
    """0002 -> 0003 keeps the data and adds the table; 0003 -> 0002 removes only it."""
    engine = create_engine_for(store_url)
    try:
        migrate(engine, "0002")
        assert "api_tokens" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO domains (name, created_at) VALUES ('example.com', :now)"),
                {"now": "2026-01-01 00:00:00+00:00"},
            )
        migrate(engine)
        store = MailStore(engine)
        store.add_user("alice@example.com", PASSWORD)
        _, secret = store.create_token("alice", "alice@example.com")
        assert store.authenticate_token(secret) is not None
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", "mailstack.store:migrations")
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0002")
        assert "api_tokens" not in inspect(engine).get_table_names()
        assert [d.name for d in store.list_domains()] == ["example.com"]
    finally:
        engine.dispose()
