"""Normalisation and validation of names, addresses, sizes and passwords (pure)."""

from __future__ import annotations

import pytest

from mailstack.names import (
    normalise_address,
    normalise_alias_source,
    normalise_domain,
    validate_script_name,
)
from mailstack.store import InvalidInput, parse_quota
from mailstack.store.passwords import check_imported_hash, hash_password, verify_password


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Example.COM", "example.com"),
        (" mail.example.org ", "mail.example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ],
)
def test_domains_are_lower_case_a_labels(given: str, expected: str) -> None:
    """Domains are stored IDNA-encoded and lower case, whatever form they arrive in."""
    assert normalise_domain(given) == expected


@pytest.mark.parametrize(
    "bad", ["", "localhost", "exa mple.com", "-x.example", "a..b", "x" * 64 + ".com", "xn--zz.com"]
)
def test_bad_domains_are_refused_naming_the_field(bad: str) -> None:
    """Invalid domains raise InvalidInput that names the argument."""
    with pytest.raises(InvalidInput, match=r"^domain: "):
        normalise_domain(bad)


def test_addresses_are_canonical() -> None:
    """Local parts are lower-cased and the domain IDNA-encoded."""
    assert normalise_address("Alice.Smith+tag@Bücher.Example") == (
        "alice.smith+tag@xn--bcher-kva.example"
    )


@pytest.mark.parametrize(
    "bad",
    ["alice", "@example.com", "a..b@example.com", ".a@example.com", "a b@example.com",
     "ä@example.com", "x" * 65 + "@example.com", "alice@", "alice@bad_domain.com"],
)  # fmt: skip
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput, match=r"^address: "):
        normalise_address(bad)


def test_alias_sources_allow_catch_all() -> None:
    assert normalise_alias_source("@Example.com") == "@example.com"
    assert normalise_alias_source("Info@Example.com") == "info@example.com"


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, None), ("", None), (0, None), (1024, 1024), ("512M", 512 * 1024**2),
     ("2G", 2 * 1024**3), ("1GiB", 1024**3), ("10k", 10240), ("100", 100)],
)  # fmt: skip
def test_quota_sizes(given: str | int | None, expected: int | None) -> None:
    assert parse_quota(given) == expected


@pytest.mark.parametrize("bad", ["lots", "-1G", "1.5G", -5])
def test_bad_quota_is_refused(bad: str | int) -> None:
    with pytest.raises(InvalidInput, match=r"^quota: "):
        parse_quota(bad)


def test_script_names() -> None:
    assert validate_script_name("My Filters") == "My Filters"
    for bad in ("", "a/b", "tab\there", "x" * 200):
        with pytest.raises(InvalidInput):
            validate_script_name(bad)


def test_password_hash_carries_dovecot_scheme() -> None:
    """Hashes are `{ARGON2ID}$argon2id$...`, which Dovecot verifies itself."""
    stored = hash_password("correct horse")
    assert stored.startswith("{ARGON2ID}$argon2id$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong horse")


def test_passwords_are_checked() -> None:
    for bad in ("short", "has\nnewline", "has\ttab!!"):
        with pytest.raises(InvalidInput, match=r"^password: "):
            hash_password(bad)


def test_imported_hashes_need_a_native_scheme() -> None:
    assert check_imported_hash("{BLF-CRYPT}$2y$05$abc").startswith("{BLF-CRYPT}")
    for bad in ("$2y$05$abc", "{PLAIN}secret", "{MD5}x"):
        with pytest.raises(InvalidInput, match=r"^password_hash: "):
            check_imported_hash(bad)
