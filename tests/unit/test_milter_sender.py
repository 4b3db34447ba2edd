"""The sender policy: every From: address must be one the authenticated user may send as.

`owners_of` stands in for `Resolver.sender_logins` (the same data shape: canonical address
-> the logins that receive its mail)."""

from __future__ import annotations

import pytest

from mailstack.milter.sender import (
    MAX_FROM_HEADERS,
    UnparsableFrom,
    check_from,
    from_addresses,
    structure,
)
from mailstack.store.errors import StoreUnavailable

OWNERS = {
    "alice@a.example": ["alice@a.example"],
    "bob@a.example": ["bob@a.example"],
    "ceo@b.example": ["ceo@b.example"],
    "team@a.example": ["alice@a.example", "bob@a.example"],  # an alias to both
    "sales@b.example": ["alice@a.example"],  # an alias in another hosted domain
}
ALICE = "alice@a.example"


def owners_of(address: str) -> list[str]:
    return OWNERS.get(address, [])


def refused_reason(login: str | None, *values: str) -> str:
    verdict = check_from(login, list(values), owners_of)
    assert not verdict.accepted, verdict
    return verdict.reason


def accepted(login: str | None, *values: str) -> bool:
    return check_from(login, list(values), owners_of).accepted


def test_own_address_is_accepted() -> None:
    assert accepted(ALICE, "alice@a.example")
    assert accepted(ALICE, "<alice@a.example>")
    assert accepted("Alice@A.Example", "ALICE@a.EXAMPLE")  # case does not matter


def test_alias_owner_may_send_as_the_alias() -> None:
    assert accepted(ALICE, "Team <team@a.example>")
    assert accepted("bob@a.example", "team@a.example")
    assert accepted(ALICE, "sales@b.example")  # another domain, but her alias


def test_someone_elses_address_is_refused() -> None:
    reason = refused_reason(ALICE, "CEO <ceo@b.example>")
    assert reason == "From: address <ceo@b.example> not owned by user alice@a.example"
    assert not accepted("bob@a.example", "sales@b.example")
    assert not accepted(ALICE, "stranger@remote.example")  # not hosted: nobody owns it


def test_every_address_must_be_owned() -> None:
    assert accepted(ALICE, "alice@a.example, Team <team@a.example>")
    assert "ceo@b.example" in refused_reason(ALICE, "alice@a.example, ceo@b.example")
    assert "ceo@b.example" in refused_reason(ALICE, "ceo@b.example, alice@a.example")
    # and every From: header (RFC 5322 allows one; OpenDKIM might read any of them)
    assert "ceo@b.example" in refused_reason(ALICE, "alice@a.example", "ceo@b.example")


def test_display_names_and_comments_are_not_addresses() -> None:
    assert accepted(ALICE, '"Alice Liddell" <alice@a.example>')
    assert accepted(ALICE, '"ceo@b.example" <alice@a.example>')  # quoted: only a name
    assert accepted(ALICE, "alice@a.example (ceo@b.example)")  # a comment
    assert accepted(ALICE, '"Smith, Alice" <alice@a.example>')
    assert accepted(ALICE, "=?utf-8?q?Alice_L=C3=AEddell?= <alice@a.example>")
    assert accepted(ALICE, '"Alice \\"the boss\\"" <alice@a.example>')
    assert accepted(ALICE, "Alice\r\n <alice@a.example>")  # folded
    assert accepted(ALICE, "Alice\n\t<alice@a.example>")
    assert "ceo@b.example" in refused_reason(ALICE, '"Alice" <ceo@b.example>')


def test_ambiguous_headers_are_refused() -> None:
    """Whatever another parser (OpenDKIM's) could read as a different address."""
    for value in (
        "ceo@b.example <alice@a.example>",  # unquoted '@' in the display name
        "alice@a.example ceo@b.example",  # two addresses without a comma
        "alice@a.example <ceo@b.example>",
        '"unterminated <alice@a.example>',
        "(unterminated <alice@a.example>",
        "alice@a.example) (",
        "=?utf-8?q?ceo@b.example?= <alice@a.example>",
    ):
        assert "cannot be parsed" in refused_reason(ALICE, value), value


def test_group_and_route_syntax_are_refused() -> None:
    for value in (
        "Friends: alice@a.example;",
        "undisclosed-recipients:;",
        "<@relay.example:alice@a.example>",
    ):
        assert "group or route" in refused_reason(ALICE, value), value


def test_missing_or_empty_from_is_refused() -> None:
    assert "no From: header" in refused_reason(ALICE)
    for value in ("", "   ", "<>", "Alice", "alice", "alice@", "@a.example", '"a@b"@a.example'):
        assert "cannot be parsed" in refused_reason(ALICE, value), value


def test_non_ascii_and_junk_addresses_are_refused() -> None:
    for value in ("älice@a.example", "alice@a.example\udcff", "alice..x@a.example"):
        assert "cannot be parsed" in refused_reason(ALICE, value), value


def test_unknown_user_owns_nothing() -> None:
    assert not accepted("mallory@a.example", "alice@a.example")
    assert not accepted("mallory@a.example", "mallory@a.example")  # not in the store
    assert not accepted("alice", "alice@a.example")  # a login that is not an address


def test_not_authenticated_is_not_checked() -> None:
    """Only authenticated submissions are judged (the milter sits on submission only)."""
    for login in (None, "", "  "):
        verdict = check_from(login, [], owners_of)
        assert verdict.accepted
        assert "not authenticated" in verdict.reason
    assert accepted(None, "ceo@b.example")


def test_limits() -> None:
    assert "more than 64 From" in refused_reason(ALICE, *[ALICE] * (MAX_FROM_HEADERS + 1))
    assert accepted(ALICE, *[ALICE] * MAX_FROM_HEADERS)
    assert "longer than" in refused_reason(ALICE, f'"{"x" * 9000}" <{ALICE}>')
    many = ", ".join(f"user{i}@a.example" for i in range(40))
    assert "more than 32 addresses" in refused_reason(ALICE, many)


def test_each_address_is_looked_up_once_and_store_errors_propagate() -> None:
    asked: list[str] = []

    def counting(address: str) -> list[str]:
        asked.append(address)
        return owners_of(address)

    assert check_from(ALICE, ["alice@a.example, ALICE@a.example", ALICE], counting).accepted
    assert asked == [ALICE]

    def broken(address: str) -> list[str]:
        raise StoreUnavailable("database is down")

    with pytest.raises(StoreUnavailable):
        check_from(ALICE, [ALICE], broken)


def test_verdict_lists_the_addresses() -> None:
    verdict = check_from(ALICE, ["Alice <alice@a.example>, team@a.example"], owners_of)
    assert verdict.addresses == ("alice@a.example", "team@a.example")


def test_parsing_helpers() -> None:
    assert structure('"a@b" <c@d> (e@f (g))') == " <c@d> "
    assert structure('"a\\"@b" x') == " x"
    with pytest.raises(UnparsableFrom):
        structure('"open')
    assert from_addresses("Alice <Alice@A.example>, bob@a.example") == [
        "alice@a.example",
        "bob@a.example",
    ]
