"""RFC 8461 parsing: the `_mta-sts` record, the policy file, and Postfix's answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.mtasts.policy import (
    Policy,
    PolicyError,
    parse_policy,
    parse_record,
    postfix_policy,
)
from mailstack.mtasts.server import destination_domain

GOOD = (
    b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
    b"max_age: 604800\r\n"
)


def test_a_policy_parses_with_every_mx() -> None:
    """CRLF lines, two mx patterns, the wildcard kept for the answer."""
    assert parse_policy(GOOD) == Policy("enforce", ("mail.example.com", "*.example.net"), 604800)
    assert parse_policy(GOOD.replace(b"\r\n", b"\n")) == parse_policy(GOOD)


@pytest.mark.parametrize(
    "body",
    [
        b"mode: enforce\r\nmx: a.example.com\r\nmax_age: 1\r\n",  # no version
        b"version: STSv2\r\nmode: enforce\r\nmx: a.example.com\r\nmax_age: 1\r\n",
        b"version: STSv1\r\nmode: strict\r\nmx: a.example.com\r\nmax_age: 1\r\n",
        b"version: STSv1\r\nmode: enforce\r\nmax_age: 1\r\n",  # enforce without mx
        b"version: STSv1\r\nmode: enforce\r\nmx: a.example.com\r\nmax_age: 31557601\r\n",
        b"version: STSv1\r\nmode: enforce\r\nmx: a.example.com\r\nmax_age: -1\r\n",
        b"version: STSv1\r\nmode: enforce\r\nmx: *.*.example.com\r\nmax_age: 1\r\n",
        b"version: STSv1\r\nmode: enforce\r\nmx a.example.com\r\nmax_age: 1\r\n",
        b"version: STSv1\r\nmode: enforce\r\nmx: a.example.com\r\nmax_age: 1\r\n" + b"x" * 70000,
        "version: STSv1\nmode: enforce\nmx: é.example.com\nmax_age: 1\n".encode(),
    ],
)
def test_invalid_policies_are_refused_whole(body: bytes) -> None:
    """Anything RFC 8461 does not allow: no policy, never a weaker one."""
    with pytest.raises(PolicyError):
        parse_policy(body)


def test_unknown_fields_are_ignored_and_the_first_mode_counts() -> None:
    body = b"version: STSv1\nmode: testing\nmode: enforce\nfoo: bar baz\nmx: a.example.com\n"
    body += b"max_age: 9\n"
    assert parse_policy(body) == Policy("testing", ("a.example.com",), 9)


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
        (["v=STSv1;id=abc"], "abc"),
        (["v=spf1 -all"], None),
        ([], None),
        (["v=spf1 -all", "v=STSv1; id=1; ext=x"], "1"),
    ],
)
def test_records(texts: list[str], expected: str | None) -> None:
    assert parse_record(texts) == expected


@pytest.mark.parametrize(
    "texts",
    [
        ["v=STSv1; id=1", "v=STSv1; id=2"],  # two records: no policy
        ["v=STSv1;"],  # no id
        ["v=STSv1; id=" + "a" * 33],
        ["v=STSv1; id=a-b"],
        ["v=STSv1; id"],
    ],
)
def test_bad_records(texts: list[str]) -> None:
    with pytest.raises(PolicyError):
        parse_record(texts)


def test_postfix_answers_only_enforce() -> None:
    enforce = parse_policy(GOOD)
    assert postfix_policy(enforce) == (
        "secure match=mail.example.com:.example.net servername=hostname"
    )
    assert postfix_policy(Policy("testing", ("a.example.com",), 1)) is None
    assert postfix_policy(Policy("none", (), 1)) is None


def test_a_policy_round_trips_through_its_text() -> None:
    policy = parse_policy(GOOD)
    assert parse_policy(policy.to_text().encode()) == policy


@pytest.mark.parametrize(
    ("key", "domain"),
    [
        ("example.com", "example.com"),
        ("Example.COM.", "example.com"),
        ("example.com:2525", "example.com"),
        ("[mx.example.com]:25", None),
        ("[192.0.2.1]", None),
        ("", None),
        ("no spaces.example", None),
    ],
)
def test_destination_domains(key: str, domain: str | None) -> None:
    assert destination_domain(key) == domain


@given(st.binary(max_size=2000))
def test_garbage_policies_parse_or_raise_policy_error(body: bytes) -> None:
    """Any bytes: a valid policy or PolicyError, nothing else; an enforce answer lists mx."""
    try:
        policy = parse_policy(body)
    except PolicyError:
        return
    answer = postfix_policy(policy)
    assert answer is None or (policy.mode == "enforce" and policy.mx)


@given(st.lists(st.text(max_size=200), max_size=4))
def test_garbage_records_parse_or_raise_policy_error(texts: list[str]) -> None:
    try:
        found = parse_record(texts)
    except PolicyError:
        return
    assert found is None or found.isalnum()


@given(st.text(max_size=300))
def test_garbage_keys_give_a_domain_or_none(key: str) -> None:
    found = destination_domain(key)
    assert found is None or (found.isascii() and " " not in found)
