"""The web listeners' and ACME's settings: defaults, parsing, and the rules across fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack.errors import ConfigError
from mailstack.settings.server import LETS_ENCRYPT, ServerSettings, load_server_settings
from mailstack.settings.values import HostPort


def _load(tmp_path: Path, **env: str) -> ServerSettings:
    base = {"MAILSTACK_ROOT": str(tmp_path), "POSTFIX_myhostname": "mx.example.com"}
    return load_server_settings({**base, **env})


def _problems(tmp_path: Path, **env: str) -> str:
    with pytest.raises(ConfigError) as failure:
        _load(tmp_path, **env)
    return "\n".join(str(p) for p in failure.value.problems)


def test_defaults(tmp_path: Path) -> None:
    settings = _load(tmp_path)
    assert settings.listen_http == HostPort("0.0.0.0", 80)
    assert settings.listen_https == HostPort("0.0.0.0", 443)
    assert settings.mta_sts_mode == "testing"
    assert settings.acme_email is None
    assert settings.acme_directory == LETS_ENCRYPT


def test_names_and_switches(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        MAILSTACK_LISTEN_HTTP="",
        MAILSTACK_MTA_STS_MODE=" Enforce ",
        MAILSTACK_TLS_NAMES="mta-sts.example.com, autoconfig.example.com MX.example.com",
    )
    assert settings.listen_http is None
    assert settings.mta_sts_mode == "enforce"
    assert settings.certificate_names == (
        "mx.example.com",
        "mta-sts.example.com",
        "autoconfig.example.com",
    )


def test_rules(tmp_path: Path) -> None:
    assert "MAILSTACK_MTA_STS_MODE" in _problems(tmp_path, MAILSTACK_MTA_STS_MODE="strict")
    no_http = _problems(tmp_path, MAILSTACK_ACME_EMAIL="a@example.com", MAILSTACK_LISTEN_HTTP="")
    assert "needs MAILSTACK_LISTEN_HTTP" in no_http
    missing = _problems(
        tmp_path, MAILSTACK_ACME_EMAIL="a@example.com", MAILSTACK_ACME_CA_FILE="/nonexistent.pem"
    )
    assert "MAILSTACK_ACME_CA_FILE" in missing
    clash = _problems(tmp_path, MAILSTACK_LISTEN_HTTPS="0.0.0.0:993")
    assert "MAILSTACK_LISTEN_HTTPS" in clash or "MAILSTACK_LISTEN_IMAPS" in clash
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    both = _problems(
        tmp_path,
        MAILSTACK_ACME_EMAIL="a@example.com",
        MAILSTACK_TLS_CERT_FILE=str(cert),
        MAILSTACK_TLS_KEY_FILE=str(cert),
    )
    assert "MAILSTACK_ACME_EMAIL: is set with MAILSTACK_TLS_CERT_FILE" in both
