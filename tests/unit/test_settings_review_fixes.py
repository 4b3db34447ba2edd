"""Settings bugs found by the unit tier, each pinned by what the user sees."""

from __future__ import annotations

import pytest

from mailstack.errors import ConfigError
from mailstack.settings.environ import load_relay_settings
from mailstack.settings.server import load_server_settings
from tests.unit.support import RELAY_ENV, SERVER_ENV, MainCf, parameter


@pytest.mark.parametrize(
    ("given", "rendered"),
    [("2001:db8::/32", "[2001:db8::]/32"), ("::1/128", "[::1]/128"), ("::1", "[::1]")],
)
def test_bare_ipv6_in_mynetworks_is_bracketed(
    relay_main_cf: MainCf, given: str, rendered: str
) -> None:
    """Postfix reads a bare IPv6 network as a `type:table` name; main.cf gets `[addr]/len`."""
    lines = relay_main_cf(POSTFIX_mynetworks=f"127.0.0.0/8 {given}")
    assert (
        parameter(lines, "mynetworks") == f"127.0.0.0/8, {rendered}"
        or parameter(lines, "mynetworks") == f"127.0.0.0/8 {rendered}"
    )


def test_deprecated_alias_error_names_the_alias() -> None:
    """A bad MYNETWORKS is reported as MYNETWORKS, the variable the user actually set."""
    with pytest.raises(ConfigError) as caught:
        load_relay_settings({**RELAY_ENV, "MYNETWORKS": "not-a-network!"}, [])
    assert [p.variable for p in caught.value.problems] == ["MYNETWORKS"]


def test_relay_listeners_must_not_clash() -> None:
    """Submission on the SMTP listener's port is refused at check time (exit 78), not by
    Postfix at start."""
    with pytest.raises(ConfigError) as caught:
        load_relay_settings({**RELAY_ENV, "MAILSTACK_LISTEN_SUBMISSION": "0.0.0.0:25"}, [])
    assert [p.variable for p in caught.value.problems] == ["MAILSTACK_LISTEN_SMTP"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MAILSTACK_LISTEN_IMAP", "0.0.0.0:25"), ("MAILSTACK_METRICS_LISTEN", "127.0.0.1:993")],
)
def test_server_listeners_must_not_clash(variable: str, value: str) -> None:
    """Two server listeners (metrics included) on one port: the later one is named."""
    with pytest.raises(ConfigError) as caught:
        load_server_settings({**SERVER_ENV, variable: value})
    assert [p.variable for p in caught.value.problems] == [variable]


def test_settings_and_datastore_spell_a_domain_the_same_way() -> None:
    """One normalisation (UTS 46, non-transitional) for settings and the datastore: the
    DKIM key the relay looks for is the one the admin commands made."""
    from mailstack.names import normalise_domain
    from mailstack.settings.values import parse_domain

    for name in ("straße.example", "Bücher.Example", "example.com"):
        assert parse_domain(name) == normalise_domain(name)
    assert parse_domain("straße.example") == "xn--strae-oqa.example"


@pytest.mark.parametrize(
    ("endpoint", "accepted"),
    [
        ("https://login.example.com/token", True),
        ("http://127.0.0.1:8080/token", True),
        ("http://[::1]:8080/token", True),
        ("http://localhost/token", True),
        ("http://login.example.com/token", False),
        ("http://10.0.0.1/token", False),
        ("ftp://login.example.com/token", False),
    ],
)
def test_token_endpoint_must_be_https_unless_loopback(endpoint: str, accepted: bool) -> None:
    """The client secret and refresh token never cross a network in clear."""
    env = {
        **RELAY_ENV,
        "RELAYHOST": "[smtp.example.com]:587",
        "RELAYHOST_USERNAME": "app@example.com",
        "XOAUTH2_CLIENT_ID": "id",
        "XOAUTH2_SECRET": "secret",
        "XOAUTH2_TOKEN_ENDPOINT": endpoint,
    }
    if accepted:
        assert load_relay_settings(env, []).xoauth2_token_endpoint == endpoint
    else:
        with pytest.raises(ConfigError) as caught:
            load_relay_settings(env, [])
        assert [p.variable for p in caught.value.problems] == ["XOAUTH2_TOKEN_ENDPOINT"]
