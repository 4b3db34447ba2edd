"""From RELAYHOST/XOAUTH2_* settings to the hop's config, and the reply formatting."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack.settings import load_relay_settings
from mailstack.xoauth2 import GOOGLE_TOKEN_ENDPOINT, MICROSOFT_SCOPE, config_from_settings
from mailstack.xoauth2.replies import Deferral, Reply

BASE = {
    "ALLOWED_SENDER_DOMAINS": "example.org",
    "POSTFIX_myhostname": "mail.example.org",
    "RELAYHOST_USERNAME": "me@gmail.com",
    "XOAUTH2_CLIENT_ID": "cid",
    "XOAUTH2_SECRET": "csecret",
}


def test_gmail_settings() -> None:
    settings = load_relay_settings(
        {
            **BASE,
            "RELAYHOST": "[smtp.gmail.com]:587",
            "POSTFIX_smtp_tls_security_level": "encrypt",
            "XOAUTH2_INITIAL_ACCESS_TOKEN": "at0",
            "XOAUTH2_INITIAL_REFRESH_TOKEN": "rt0",
        }
    )
    config = config_from_settings(settings, Path("/q"))

    assert (config.upstream_host, config.upstream_port) == ("smtp.gmail.com", 587)
    assert config.upstream_tls == "starttls"
    assert config.token_endpoint == GOOGLE_TOKEN_ENDPOINT
    assert config.scope is None
    assert config.token_file == Path("/q/xoauth2-tokens/me@gmail.com")
    assert config.initial_tokens is not None
    assert config.initial_tokens.refresh_token == "rt0"
    assert config.helo_name == "mail.example.org"
    assert "csecret" not in repr(config)
    assert "rt0" not in repr(config)


def test_microsoft_365_settings() -> None:
    endpoint = "https://login.microsoftonline.com/contoso-tenant-id/oauth2/v2.0/token"
    settings = load_relay_settings(
        {**BASE, "RELAYHOST": "[smtp.office365.com]:587", "XOAUTH2_TOKEN_ENDPOINT": endpoint}
    )
    config = config_from_settings(settings, Path("/q"))

    assert config.scope == MICROSOFT_SCOPE
    assert config.upstream_tls == "starttls"  # never plain for a bearer token, even at "may"
    assert config.initial_tokens is None  # only one of the two was given: do not seed


def test_port_465_means_implicit_tls() -> None:
    settings = load_relay_settings({**BASE, "RELAYHOST": "[smtp.gmail.com]:465"})
    assert config_from_settings(settings, Path("/q")).upstream_tls == "tls"


def test_without_xoauth2_there_is_no_hop() -> None:
    settings = load_relay_settings(
        {"ALLOWED_SENDER_DOMAINS": "example.org", "POSTFIX_myhostname": "m.example.org"}
    )
    with pytest.raises(ValueError, match="RELAYHOST"):
        config_from_settings(settings, Path("/q"))


def test_multiline_reply_wire_format() -> None:
    reply = Reply(550, "5.1.1 first\nsecond\x07line")
    assert reply.wire() == "550-5.1.1 first\r\n550 second line"


def test_deferral_must_be_temporary() -> None:
    with pytest.raises(ValueError, match="4xx"):
        Deferral(Reply(550, "no"), "x")
