"""The service layer against real databases: SQLite and a private PostgreSQL."""

from __future__ import annotations

from datetime import UTC

import pytest

from mailstack.store import Conflict, InvalidInput, MailStore, NotFound, SpamSettings
from mailstack.store.passwords import verify_password

PASSWORD = "correct horse battery"


@pytest.fixture
def populated(store: MailStore) -> MailStore:
    store.add_domain("example.com")
    store.add_user("alice@example.com", PASSWORD)
    return store


def test_domains_add_list_remove(store: MailStore) -> None:
    """Domains are normalised, listed with their counts, and removed."""
    created = store.add_domain("Bücher.Example")
    assert created.name == "xn--bcher-kva.example"
    assert created.created_at.tzinfo is UTC
    store.add_domain("example.com")
    assert [d.name for d in store.list_domains()] == ["example.com", "xn--bcher-kva.example"]
    store.remove_domain("BÜCHER.example")
    assert [d.name for d in store.list_domains()] == ["example.com"]


def test_duplicate_domain_is_a_conflict(store: MailStore) -> None:
    store.add_domain("example.com")
    with pytest.raises(Conflict, match="already exists"):
        store.add_domain("EXAMPLE.com")


def test_domain_in_use_needs_cascade(populated: MailStore) -> None:
    """Removing a domain with users is refused unless asked to cascade."""
    populated.add_alias("info@example.com", "alice@example.com")
    with pytest.raises(Conflict, match="1 users, 1 aliases"):
        populated.remove_domain("example.com")
    populated.remove_domain("example.com", cascade=True)
    assert populated.list_domains() == []
    assert populated.list_users() == []
    assert populated.list_aliases() == []


def test_missing_domain_is_not_found(store: MailStore) -> None:
    with pytest.raises(NotFound, match="not hosted"):
        store.remove_domain("nowhere.example")
    with pytest.raises(NotFound, match="not hosted"):
        store.add_user("bob@nowhere.example", PASSWORD)


def test_alias_domains(populated: MailStore) -> None:
    """An alias domain points at a hosted domain and cannot also be hosted."""
    info = populated.add_alias_domain("Example.NET", "example.com")
    assert (info.name, info.target) == ("example.net", "example.com")
    assert populated.list_domains()[0].alias_domains == ("example.net",)
    with pytest.raises(Conflict):
        populated.add_domain("example.net")
    with pytest.raises(Conflict):
        populated.add_alias_domain("example.com", "example.com")
    with pytest.raises(NotFound):
        populated.add_alias_domain("example.org", "missing.example")
    populated.remove_alias_domain("example.net")
    assert populated.list_alias_domains() == []
    with pytest.raises(NotFound):
        populated.remove_alias_domain("example.net")


def test_users_lifecycle(populated: MailStore) -> None:
    """Add, list, change password and quota, disable, enable and remove a user."""
    user = populated.get_user("Alice@Example.com")
    assert (user.address, user.enabled, user.quota_bytes) == ("alice@example.com", True, None)
    assert populated.verify_password("alice@example.com", PASSWORD)

    populated.set_password("alice@example.com", "another secret")
    assert not populated.verify_password("alice@example.com", PASSWORD)
    assert populated.verify_password("alice@example.com", "another secret")

    assert populated.set_quota("alice@example.com", "2G").quota_bytes == 2 * 1024**3
    populated.disable_user("alice@example.com")
    assert not populated.get_user("alice@example.com").enabled
    assert not populated.verify_password("alice@example.com", "another secret")
    populated.enable_user("alice@example.com")
    assert populated.get_user("alice@example.com").enabled

    populated.add_user("bob@example.com", PASSWORD, quota=1024, enabled=False)
    assert [u.address for u in populated.list_users("example.com")] == [
        "alice@example.com",
        "bob@example.com",
    ]
    populated.remove_user("bob@example.com")
    with pytest.raises(NotFound):
        populated.get_user("bob@example.com")


def test_user_errors(populated: MailStore) -> None:
    with pytest.raises(Conflict, match="already exists"):
        populated.add_user("ALICE@example.com", PASSWORD)
    with pytest.raises(InvalidInput, match=r"^password: "):
        populated.add_user("carol@example.com", "short")
    with pytest.raises(InvalidInput, match=r"^password: "):
        populated.add_user("carol@example.com")
    with pytest.raises(NotFound):
        populated.set_password("nobody@example.com", PASSWORD)
    with pytest.raises(InvalidInput, match=r"^address: "):
        populated.disable_user("not an address")


def test_stored_hash_is_dovecot_native(populated: MailStore) -> None:
    """The stored value carries the {ARGON2ID} prefix; imported hashes keep theirs."""
    from sqlalchemy import select

    from mailstack.store.models import User

    populated.add_user("old@example.com", password_hash="{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuv")
    with populated.engine.connect() as conn:
        hashes = dict(conn.execute(select(User.address, User.password_hash)).all())
    assert hashes["alice@example.com"].startswith("{ARGON2ID}$argon2id$")
    assert verify_password(hashes["alice@example.com"], PASSWORD)
    assert hashes["old@example.com"] == "{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuv"


def test_aliases(populated: MailStore) -> None:
    """Aliases have one or more targets; adding appends; removing can be partial."""
    info = populated.add_alias("Team@example.com", ["alice@example.com", "Bob@Remote.org"])
    assert info.targets == ("alice@example.com", "bob@remote.org")
    populated.add_alias("team@example.com", ["carol@remote.org", "alice@example.com"])
    assert populated.list_aliases()[0].targets == (
        "alice@example.com",
        "bob@remote.org",
        "carol@remote.org",
    )
    with pytest.raises(Conflict, match="already has every target"):
        populated.add_alias("team@example.com", "bob@remote.org")

    catch_all = populated.add_alias("@example.com", "alice@example.com")
    assert catch_all.catch_all

    populated.remove_alias("team@example.com", ["bob@remote.org"])
    assert populated.list_aliases("example.com")[1].targets == (
        "alice@example.com",
        "carol@remote.org",
    )
    with pytest.raises(NotFound, match="has no target"):
        populated.remove_alias("team@example.com", "zed@remote.org")
    populated.remove_alias("team@example.com", ["alice@example.com", "carol@remote.org"])
    populated.remove_alias("@example.com")
    assert populated.list_aliases() == []
    with pytest.raises(NotFound):
        populated.remove_alias("@example.com")


def test_alias_errors(populated: MailStore) -> None:
    with pytest.raises(InvalidInput, match=r"^targets: "):
        populated.add_alias("x@example.com", [])
    with pytest.raises(InvalidInput, match=r"^targets: "):
        populated.add_alias("x@example.com", "@example.com")
    with pytest.raises(InvalidInput, match=r"^source: "):
        populated.add_alias("not-an-address", "alice@example.com")
    with pytest.raises(NotFound):
        populated.add_alias("x@elsewhere.example", "alice@example.com")


def test_sieve_scripts(populated: MailStore) -> None:
    """Put, get, list, activate (one at a time), rename and remove scripts."""
    address = "alice@example.com"
    first = populated.put_script(address, "main", "keep;\n")
    assert (first.name, first.active, first.version) == ("main", False, 1)
    assert populated.put_script(address, "main", "discard;\n").version == 2
    assert populated.get_script(address, "main").content == "discard;\n"

    populated.put_script(address, "vacation", "keep;\n", activate=True)
    populated.activate_script(address, "main")
    listing = {s.name: s.active for s in populated.list_scripts(address)}
    assert listing == {"main": True, "vacation": False}

    with pytest.raises(Conflict, match="is active"):
        populated.remove_script(address, "main")
    populated.activate_script(address, None)
    assert not any(s.active for s in populated.list_scripts(address))

    populated.rename_script(address, "vacation", "holiday")
    with pytest.raises(Conflict):
        populated.rename_script(address, "holiday", "main")
    populated.remove_script(address, "main")
    assert [s.name for s in populated.list_scripts(address)] == ["holiday"]
    with pytest.raises(NotFound):
        populated.get_script(address, "main")


def test_sieve_errors(populated: MailStore) -> None:
    with pytest.raises(InvalidInput, match=r"^content: "):
        populated.put_script("alice@example.com", "big", "#" * (1024 * 1024 + 1))
    with pytest.raises(InvalidInput, match=r"^name: "):
        populated.put_script("alice@example.com", "a/b", "keep;")
    with pytest.raises(NotFound):
        populated.put_script("nobody@example.com", "main", "keep;")
    with pytest.raises(NotFound):
        populated.activate_script("alice@example.com", "missing")


def test_removing_a_user_removes_their_scripts(populated: MailStore) -> None:
    populated.put_script("alice@example.com", "main", "keep;", activate=True)
    populated.remove_user("alice@example.com")
    populated.add_user("alice@example.com", PASSWORD)
    assert populated.list_scripts("alice@example.com") == []


def test_spam_settings_per_user(populated: MailStore) -> None:
    """A user's own junk threshold and filter switch; what is not given stays as it is."""
    address = populated.list_users()[0].address
    assert populated.spam_settings(address) == SpamSettings(address, None, True)
    assert populated.set_spam(address, threshold=4) == SpamSettings(address, 4, True)
    assert populated.set_spam(address, enabled=False) == SpamSettings(address, 4, False)
    assert populated.set_spam(address, threshold=None) == SpamSettings(address, None, False)
    with pytest.raises(InvalidInput, match="must be 0 to 1000"):
        populated.set_spam(address, threshold=-3)
    with pytest.raises(NotFound):
        populated.set_spam("nobody@example.com", enabled=True)
