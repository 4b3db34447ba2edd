"""Postfix's own client (`postmap -q` over socketmap) against the running lookup service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mailstack.store import MailStore

Postmap = Callable[[str, str], Any]  # conftest.postmap: returns a PostmapResult
PASSWORD = "correct horse battery"


@pytest.fixture
def mail(sqlite_store: MailStore) -> MailStore:
    store = sqlite_store
    store.add_domain("example.com")
    store.add_domain("bücher.example")
    store.add_alias_domain("example.net", "example.com")
    store.add_user("alice@example.com", PASSWORD)
    store.add_user("bob@example.com", PASSWORD)
    store.add_user("carol@xn--bcher-kva.example", PASSWORD)
    store.add_alias("team@example.com", ["alice@example.com", "bob@example.com", "x@remote.org"])
    return store


def test_domain_maps(mail: MailStore, postmap: Postmap) -> None:
    """Hosted domains and alias domains, case- and IDNA-insensitive."""
    assert postmap("domain", "example.com").value == "example.com"
    assert postmap("domain", "EXAMPLE.COM").value == "example.com"
    assert postmap("domain", "bücher.example").value == "xn--bcher-kva.example"
    assert not postmap("domain", "example.net").found
    assert not postmap("domain", "elsewhere.org").found
    assert postmap("aliasdomain", "example.net").value == "example.com"
    assert not postmap("aliasdomain", "example.com").found
    # virtual_mailbox_domains: mail is taken for both kinds, in any spelling
    assert postmap("maildomain", "Example.COM").value == "example.com"
    assert postmap("maildomain", "example.net").value == "example.net"
    assert postmap("maildomain", "bücher.example").value == "xn--bcher-kva.example"
    assert not postmap("maildomain", "elsewhere.org").found


def test_mailbox_map(mail: MailStore, postmap: Postmap) -> None:
    assert postmap("mailbox", "alice@example.com").value == "alice@example.com"
    assert postmap("mailbox", "Alice@Example.com").value == "alice@example.com"
    assert not postmap("mailbox", "team@example.com").found
    assert not postmap("mailbox", "@example.com").found
    assert not postmap("mailbox", "nobody@example.com").found


def test_alias_map(mail: MailStore, postmap: Postmap) -> None:
    """Aliases expand to all targets; mailboxes map to themselves; alias domains rewrite."""
    assert postmap("alias", "team@example.com").value == (
        "alice@example.com,bob@example.com,x@remote.org"
    )
    assert postmap("alias", "alice@example.com").value == "alice@example.com"
    assert postmap("alias", "alice@example.net").value == "alice@example.com"
    assert postmap("alias", "team@example.net").value == "team@example.com"
    assert not postmap("alias", "nobody@example.com").found
    assert not postmap("alias", "nobody@example.net").found
    assert not postmap("alias", "@example.com").found


def test_catch_all_does_not_swallow_real_users(mail: MailStore, postmap: Postmap) -> None:
    """With a catch-all, unknown addresses go to it, but real mailboxes keep their mail."""
    mail.add_alias("@example.com", "bob@example.com")
    assert postmap("alias", "random@example.com").value == "bob@example.com"
    assert postmap("alias", "@example.com").value == "bob@example.com"
    assert postmap("alias", "alice@example.com").value == "alice@example.com"
    assert postmap("alias", "random@example.net").value == "random@example.com"


def test_sender_login_map(mail: MailStore, postmap: Postmap) -> None:
    """Whoever receives mail for an address may send as it; disabled users may not."""
    assert postmap("senderlogin", "alice@example.com").value == "alice@example.com"
    assert postmap("senderlogin", "team@example.com").value == "alice@example.com,bob@example.com"
    assert postmap("senderlogin", "alice@example.net").value == "alice@example.com"
    assert not postmap("senderlogin", "x@remote.org").found
    mail.disable_user("bob@example.com")
    assert postmap("senderlogin", "team@example.com").value == "alice@example.com"
    assert not postmap("senderlogin", "bob@example.com").found
    assert postmap("mailbox", "bob@example.com").found  # still receives mail


def test_changes_are_seen_at_once(mail: MailStore, postmap: Postmap) -> None:
    """No cache and no reload: each write is visible to the very next lookup."""
    assert not postmap("mailbox", "dave@example.com").found
    mail.add_user("dave@example.com", PASSWORD)
    assert postmap("mailbox", "dave@example.com").found
    mail.add_alias("team@example.com", "dave@example.com")
    assert postmap("alias", "team@example.com").value.endswith(",dave@example.com")
    mail.remove_user("dave@example.com")
    assert not postmap("mailbox", "dave@example.com").found
    mail.remove_domain("example.com", cascade=True)
    assert not postmap("domain", "example.com").found


def test_junk_keys_are_not_found(mail: MailStore, postmap: Postmap) -> None:
    for key in ("not-an-address", "a..b@example.com", "x" * 300 + "@example.com", "@@@"):
        result = postmap("alias", key)
        assert result.returncode == 1
        assert "error" not in result.stderr


def test_unknown_map_is_a_lookup_error(mail: MailStore, postmap: Postmap) -> None:
    """A misspelt map name must defer mail (a Postfix lookup error), never say "unknown user"."""
    result = postmap("mialbox", "alice@example.com")
    assert not result.found
    assert "permanent error: unknown map 'mialbox'" in result.stderr


def test_reply_over_postfix_limit_is_perm(mail: MailStore, postmap: Postmap) -> None:
    """Postfix refuses replies over 100000 characters; the server says PERM instead."""
    local = "x" * 60
    targets = [f"{local}{i:04d}@{'d' * 40}.example" for i in range(1000)]
    mail.add_alias("big@example.com", targets)
    result = postmap("alias", "big@example.com")
    assert not result.found
    assert "permanent error: reply too long" in result.stderr


def test_hosted_sender_map_answers_full_addresses_in_hosted_domains_only(
    mail: MailStore, postmap: Postmap
) -> None:
    """The MX's check_sender_access table: hosted (and alias-domain) senders get a 5.7.1
    action, whether or not the mailbox exists; bare and parent domains are never answered."""
    for sender in ("alice@example.com", "Nobody@EXAMPLE.com", "x@example.net", "a@bücher.example"):
        result = postmap("hostedsender", sender)
        assert result.value.startswith("550 5.7.1 "), sender
    for key in ("friend@remote.org", "example.com", "alice@", "@example.com", "x@sub.example.com"):
        assert not postmap("hostedsender", key).found, key
