"""DKIM key rotation's pure parts: selector names, the state machine and its state file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailstack.dkim.selectors import (
    DomainSelectors,
    SelectorError,
    SelectorKey,
    State,
    domain_selectors,
    load_state,
    new_selector,
    rotated_domains,
    save_state,
    signing_key,
    state_path,
)
from mailstack.dns.records import DkimKey, expected_records
from mailstack.errors import ConfigError
from mailstack.settings.server import load_server_settings
from mailstack.settings.values import parse_selector_format
from tests.unit.support import SERVER_ENV

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DOMAIN = "example.com"


def unrotated(keys: Path) -> DomainSelectors:
    """example.com's boky/postfix key, as it is before any rotation."""
    keys.mkdir(parents=True, exist_ok=True)
    (keys / f"{DOMAIN}.private").write_text("key")
    state = domain_selectors(keys, DOMAIN, "mail")
    assert state is not None
    return state


# -- selector names -----------------------------------------------------------------------------


def test_the_default_selector_is_the_month_and_a_second_one_gets_a_number() -> None:
    assert new_selector("ms%Y%m", NOW, ["mail"]) == "ms202611"
    assert new_selector("ms%Y%m", NOW, ["mail", "ms202611"]) == "ms202611-2"
    assert new_selector("ms%Y%m", NOW, ["ms202611", "ms202611-2"]) == "ms202611-3"
    assert new_selector("k%Y%m%d", NOW, []) == "k20261126"


@pytest.mark.parametrize("pattern", ["", "ms %Y", "%Y/%m", "-%Y", "ms=%Y"])
def test_a_pattern_that_cannot_make_a_selector_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"selector|empty"):
        parse_selector_format(pattern)


def test_a_bad_rotate_selector_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError) as refused:
        load_server_settings({**SERVER_ENV, "MAILSTACK_DKIM_ROTATE_SELECTOR": "dkim %Y"})
    (problem,) = refused.value.problems
    assert problem.variable == "MAILSTACK_DKIM_ROTATE_SELECTOR"
    settings = load_server_settings({**SERVER_ENV, "MAILSTACK_DKIM_ROTATE_SELECTOR": "s%Y"})
    assert settings.dkim_rotate_selector == "s%Y"
    assert load_server_settings(SERVER_ENV).dkim_rotate_selector == "ms%Y%m"


# -- the state machine --------------------------------------------------------------------------


def test_rotate_activate_retire(tmp_path: Path) -> None:
    """The new selector waits, then signs while the old one retires, then the old one goes."""
    start = unrotated(tmp_path)
    assert [(k.selector, k.state, k.key) for k in start.keys] == [
        ("mail", State.ACTIVE, "example.com.private")
    ]
    rotated = start.rotated("ms202611", NOW)
    assert rotated.active.selector == "mail"
    pending = rotated.pending
    assert pending is not None
    assert pending.key == "selectors/example.com/ms202611.private"
    with pytest.raises(SelectorError, match="already has a pending selector ms202611"):
        rotated.rotated("other", NOW)

    later = NOW + timedelta(hours=1)
    active = rotated.activated("ms202611", later)
    assert active.active.selector == "ms202611"
    assert active.get("mail") == SelectorKey("mail", State.RETIRING, "example.com.private", later)
    with pytest.raises(SelectorError, match="activate another selector first"):
        active.retired("ms202611")
    with pytest.raises(SelectorError, match="already signs"):
        active.activated("ms202611", later)

    assert active.retired("mail").selectors == ["ms202611"]
    rolled_back = active.activated("mail", later)  # a retiring key can sign again
    assert rolled_back.active.selector == "mail"
    assert rolled_back.get("ms202611").state is State.RETIRING


def test_unknown_selectors_and_taken_names_are_refused(tmp_path: Path) -> None:
    state = unrotated(tmp_path)
    with pytest.raises(SelectorError, match="already has a selector 'mail'"):
        state.rotated("mail", NOW)
    with pytest.raises(SelectorError, match="has no selector 'nope'; it has mail"):
        state.activated("nope", NOW)


def test_a_pending_selector_can_be_given_up(tmp_path: Path) -> None:
    state = unrotated(tmp_path).rotated("next", NOW)
    assert state.retired("next").selectors == ["mail"]


# -- the state file -----------------------------------------------------------------------------


def test_the_state_file_round_trips_and_decides_the_signing_key(tmp_path: Path) -> None:
    keys = tmp_path
    assert signing_key(keys, DOMAIN, "mail").private_key == keys / "example.com.private"
    state = unrotated(keys).rotated("ms202611", NOW).activated("ms202611", NOW)
    save_state(keys, state)
    path = state_path(keys, DOMAIN)
    assert path == keys / "selectors/example.com.json"
    assert path.stat().st_mode & 0o777 == 0o644  # the worker reads it for the API
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no half-written file left
    assert load_state(keys, DOMAIN) == state
    assert rotated_domains(keys) == [DOMAIN]
    assert load_state(keys, "example.net") is None

    # DKIM_SELECTOR no longer decides: the state file does
    key = signing_key(keys, DOMAIN, "other")
    assert key.selector == "ms202611"
    assert key.private_key == keys / "selectors/example.com/ms202611.private"
    assert key.record_name == "ms202611._domainkey.example.com"


def write_state(keys: Path, **changes: object) -> None:
    data: dict[str, object] = {
        "version": 1,
        "domain": DOMAIN,
        "selectors": [
            {"selector": "mail", "state": "active", "key": "example.com.private", "since": "x"}
        ],
    }
    data.update(changes)
    state_path(keys, DOMAIN).parent.mkdir(parents=True, exist_ok=True)
    state_path(keys, DOMAIN).write_text(json.dumps(data))


def entry(selector: str, state: str, key: str) -> dict[str, str]:
    return {"selector": selector, "state": state, "key": key, "since": NOW.isoformat()}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"domain": "example.net"}, "version 1 for example.com expected"),
        ({"selectors": [entry("mail", "active", "../../../etc/shadow")]}, "unexpected key"),
        ({"selectors": [entry("s1", "active", "selectors/example.com/s2.private")]}, "unexp"),
        ({"selectors": [entry("mail", "asleep", "example.com.private")]}, "not a selector"),
        ({"selectors": [entry("mail", "pending", "example.com.private")]}, "exactly one"),
        (
            {
                "selectors": [
                    entry("mail", "active", "example.com.private"),
                    entry("mail", "retiring", "example.com.private"),
                ]
            },
            "listed twice",
        ),
        ({}, "not a selector state file"),  # since: "x" is no time
    ],
)
def test_a_damaged_state_file_is_refused_naming_it(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    write_state(tmp_path, **changes)
    with pytest.raises(SelectorError, match=message) as refused:
        load_state(tmp_path, DOMAIN)
    assert str(state_path(tmp_path, DOMAIN)) in str(refused.value)


def test_dns_lists_every_selector_with_its_state() -> None:
    keys = [
        DkimKey("ms202611", "v=DKIM1; p=NEW"),
        DkimKey("mail", "v=DKIM1; p=OLD", "retiring since 2026-11-26: keep it published"),
    ]
    records = [
        r for r in expected_records(DOMAIN, "mx.example.com", {}, keys) if r.purpose == "DKIM"
    ]
    assert [(r.name, r.value) for r in records] == [
        ("ms202611._domainkey.example.com", "v=DKIM1; p=NEW"),
        ("mail._domainkey.example.com", "v=DKIM1; p=OLD"),
    ]
    assert records[0].note.startswith("active: ")
    assert records[1].note.startswith("retiring since 2026-11-26")
