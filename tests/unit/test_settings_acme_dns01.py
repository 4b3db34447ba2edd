"""ACME over DNS-01: its settings, the rules across them (wildcards only with DNS-01), and
what the worker is given (the TSIG secret in its environment, never in argv)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailstack.errors import ConfigError, ExitCode
from mailstack.paths import Paths
from mailstack.runtime.acme import acme_options, acme_secrets
from mailstack.settings.server import ServerSettings, load_server_settings
from mailstack.settings.values import HostPort

SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ="
DNS01 = {
    "MAILSTACK_ACME_EMAIL": "postmaster@example.com",
    "MAILSTACK_ACME_CHALLENGE": "dns-01",
    "MAILSTACK_ACME_DNS_SERVER": "ns1.example.com",
    "MAILSTACK_ACME_DNS_TSIG_KEY_NAME": "acme-update.",
    "MAILSTACK_ACME_DNS_TSIG_SECRET": SECRET,
}


def _load(tmp_path: Path, **env: str) -> ServerSettings:
    base = {"MAILSTACK_ROOT": str(tmp_path), "POSTFIX_myhostname": "mx.example.com"}
    return load_server_settings({**base, **env})


def _problems(tmp_path: Path, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as failure:
        _load(tmp_path, **env)
    return [str(p) for p in failure.value.problems]


def test_defaults_are_http01_without_dns(tmp_path: Path) -> None:
    settings = _load(tmp_path)
    assert settings.acme_challenge == "http-01"
    assert settings.acme_dns_server is None
    assert settings.acme_dns_tsig_algorithm == "hmac-sha256"


def test_dns01_settings_parsed(tmp_path: Path) -> None:
    changes = {
        "MAILSTACK_ACME_CHALLENGE": " DNS-01 ",
        "MAILSTACK_ACME_DNS_SERVER": "[2001:db8::53]:5353",
        "MAILSTACK_ACME_DNS_TSIG_ALGORITHM": "HMAC-SHA512",
        "MAILSTACK_ACME_DNS_ZONE": "Example.COM.",
        "MAILSTACK_TLS_NAMES": "*.example.com, example.com",
        "MAILSTACK_LISTEN_HTTP": "",  # DNS-01 needs no HTTP listener
    }
    settings = _load(tmp_path, **{**DNS01, **changes})
    assert settings.acme_challenge == "dns-01"
    assert settings.acme_dns_server == HostPort("2001:db8::53", 5353)
    assert settings.acme_dns_tsig_key_name == "acme-update"
    assert settings.acme_dns_tsig_algorithm == "hmac-sha512"
    assert settings.acme_dns_zone == "example.com"
    assert settings.certificate_names == ("mx.example.com", "*.example.com", "example.com")
    assert _load(tmp_path, **DNS01).acme_dns_server == HostPort("ns1.example.com", 53)


def test_secret_from_a_file_and_never_shown(tmp_path: Path) -> None:
    secret_file = tmp_path / "tsig"
    secret_file.write_text(SECRET + "\n")
    env = {k: v for k, v in DNS01.items() if k != "MAILSTACK_ACME_DNS_TSIG_SECRET"}
    settings = _load(tmp_path, **env, MAILSTACK_ACME_DNS_TSIG_SECRET_FILE=str(secret_file))
    assert settings.acme_dns_tsig_secret is not None
    assert settings.acme_dns_tsig_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)


def test_dns01_without_a_server_names_the_variable_and_exits_78(tmp_path: Path) -> None:
    env = {k: v for k, v in DNS01.items() if k != "MAILSTACK_ACME_DNS_SERVER"}
    [problem] = _problems(tmp_path, **env)
    assert problem.startswith("MAILSTACK_ACME_DNS_SERVER: is needed with")
    checked = subprocess.run(
        [sys.executable, "-m", "mailstack", "check"],
        env={"MAILSTACK_PROFILE": "server", "MAILSTACK_ROOT": str(tmp_path), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert checked.returncode == ExitCode.CONFIG == 78
    assert "MAILSTACK_ACME_DNS_SERVER" in checked.stdout + checked.stderr
    assert SECRET not in checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("changes", "variable", "words"),
    [
        ({"MAILSTACK_ACME_DNS_TSIG_SECRET": ""}, "MAILSTACK_ACME_DNS_TSIG_SECRET", "both"),
        ({"MAILSTACK_ACME_DNS_TSIG_KEY_NAME": ""}, "MAILSTACK_ACME_DNS_TSIG_KEY_NAME", "both"),
        ({"MAILSTACK_ACME_DNS_TSIG_SECRET": "not base64!"}, "_TSIG_SECRET", "base64"),
        ({"MAILSTACK_ACME_DNS_TSIG_KEY_NAME": "two words"}, "_TSIG_KEY_NAME", "key name"),
        ({"MAILSTACK_ACME_DNS_TSIG_ALGORITHM": "hmac-md5"}, "_TSIG_ALGORITHM", "one of"),
        ({"MAILSTACK_ACME_DNS_SERVER": "ns1.example.com:99999"}, "_DNS_SERVER", "1..65535"),
        ({"MAILSTACK_ACME_DNS_ZONE": "not a zone"}, "MAILSTACK_ACME_DNS_ZONE", "valid"),
        ({"MAILSTACK_ACME_CHALLENGE": "tls-alpn-01"}, "MAILSTACK_ACME_CHALLENGE", "one of"),
        ({"MAILSTACK_ACME_CHALLENGE": "http-01"}, "MAILSTACK_ACME_DNS_SERVER", "http-01"),
        ({"MAILSTACK_ACME_EMAIL": ""}, "MAILSTACK_ACME_CHALLENGE", "ACME_EMAIL is not"),
    ],
)
def test_bad_dns01_settings_name_their_variable(
    tmp_path: Path, changes: dict[str, str], variable: str, words: str
) -> None:
    problems = _problems(tmp_path, **{**DNS01, **changes})
    assert any(variable in p.split(":")[0] and words in p for p in problems), problems
    assert not any(SECRET in p for p in problems)


@pytest.mark.parametrize(
    "env",
    [
        {},  # no ACME at all: the self-signed certificate cannot be a wildcard's either
        {"MAILSTACK_ACME_EMAIL": "postmaster@example.com"},  # HTTP-01 cannot validate one
    ],
)
def test_wildcard_only_with_dns01(tmp_path: Path, env: dict[str, str]) -> None:
    [problem] = _problems(tmp_path, **env, MAILSTACK_TLS_NAMES="*.example.com")
    assert problem.startswith("MAILSTACK_TLS_NAMES: *.example.com: a wildcard name needs ACME")
    assert "MAILSTACK_ACME_CHALLENGE=dns-01" in problem


@pytest.mark.parametrize("name", ["*.*.example.com", "mail.*.example.com", "*example.com", "*."])
def test_malformed_wildcards_refused(tmp_path: Path, name: str) -> None:
    problems = _problems(tmp_path, **DNS01, MAILSTACK_TLS_NAMES=name)
    assert any(p.startswith("MAILSTACK_TLS_NAMES:") for p in problems), problems


def test_worker_gets_the_secret_in_its_environment_only(tmp_path: Path) -> None:
    settings = _load(tmp_path, **DNS01, MAILSTACK_ACME_DNS_ZONE="example.com")
    argv, env = acme_options(settings, Paths(tmp_path))
    assert env == {"MAILSTACK_ACME_DNS_TSIG_SECRET": SECRET}
    assert SECRET not in " ".join(argv)
    text = " ".join(argv)
    assert "--acme-challenge dns-01 --acme-dns-server ns1.example.com:53" in text
    assert "--acme-dns-zone example.com" in text
    assert "--acme-dns-tsig-key-name acme-update --acme-dns-tsig-algorithm hmac-sha256" in text
    assert acme_secrets(settings) == [SECRET]  # redacted from every log line
    http01 = _load(tmp_path, MAILSTACK_ACME_EMAIL="postmaster@example.com")
    argv, env = acme_options(http01, Paths(tmp_path))
    assert env == {}
    assert "--acme-dns-server" not in argv


def test_worker_builds_the_provider_from_those_options(tmp_path: Path) -> None:
    """The options and environment the supervisor gives make the worker's RFC 2136 provider;
    its description never shows the secret (it may end up in a traceback)."""
    from mailstack.worker.__main__ import parse_args
    from mailstack.worker.acme import rfc2136_provider

    settings = _load(tmp_path, **{**DNS01, "MAILSTACK_ACME_DNS_SERVER": "[::1]:5353"})
    argv, env = acme_options(settings, Paths(tmp_path))
    provider = rfc2136_provider(parse_args(argv), env)
    assert provider.server == HostPort("::1", 5353)
    assert provider.tsig is not None
    assert (provider.tsig.name, provider.tsig.algorithm) == ("acme-update", "hmac-sha256")
    assert provider.tsig.secret == SECRET
    assert SECRET not in repr(provider)
    with pytest.raises(ValueError, match="both or neither"):
        rfc2136_provider(parse_args(argv), {})
