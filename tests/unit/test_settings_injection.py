"""A setting must not smuggle lines into a configuration file.

main.cf, master.cf, opendkim.conf and sasl_passwd take one entry per line, so a newline (or
any other control character) inside a value could add settings of its own, e.g.
`POSTFIX_smtpd_banner="x<newline>mynetworks = 0.0.0.0/0"`. Both profiles refuse such values
with the variable named, every problem at once; nothing is rendered.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mailstack.errors import ConfigError
from mailstack.paths import Paths
from mailstack.render.postfix import main_cf_parameters, render_main_cf
from mailstack.settings.environ import load_relay_settings
from mailstack.settings.server import load_server_settings
from tests.helpers import MAILSTACK, Relay, base_env, free_port, private_root

INJECTED = "x\nmynetworks = 0.0.0.0/0"

RELAY = {
    "ALLOWED_SENDER_DOMAINS": "example.com",
    "POSTFIX_myhostname": "relay.example.com",
    "MAILSTACK_ROOT": "/srv/mailstack",
}
SERVER = {
    "POSTFIX_myhostname": "mx.example.com",
    "MAILSTACK_ROOT": "/srv/mailstack",
    "MAILSTACK_MAIL_USER": "nobody",
}
#: What RELAYHOST_USERNAME and the XOAUTH2 secrets need around them to be valid.
RELAY_AUTH = {"RELAYHOST": "[smtp.example.com]:587", "RELAYHOST_USERNAME": "user"}


def first_problems(refused: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    """Variable -> the first problem reported for it (a value may also fail its parser)."""
    problems: dict[str, str] = {}
    for problem in refused.value.problems:
        problems.setdefault(problem.variable, problem.message)
    return problems


def relay_problems(**env: str) -> dict[str, str]:
    """What `load_relay_settings` reports for RELAY + env."""
    with pytest.raises(ConfigError) as refused:
        load_relay_settings({**RELAY, **env})
    return first_problems(refused)


def server_problems(**env: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        load_server_settings({**SERVER, **env})
    return first_problems(refused)


@pytest.mark.parametrize(
    ("variable", "extra"),
    [
        ("POSTFIX_smtpd_banner", {}),
        ("POSTFIX_myhostname", {}),
        ("POSTFIX_smtp_tls_security_level", {}),
        ("POSTFIX_message_size_limit", {}),
        ("OPENDKIM_Canonicalization", {}),
        ("RELAYHOST_PASSWORD", RELAY_AUTH),
        ("RELAYHOST_USERNAME", {"RELAYHOST": "[smtp.example.com]:587"}),
        ("XOAUTH2_CLIENT_ID", RELAY_AUTH),
        ("XOAUTH2_SECRET", RELAY_AUTH),
        ("XOAUTH2_INITIAL_ACCESS_TOKEN", RELAY_AUTH),
        ("XOAUTH2_INITIAL_REFRESH_TOKEN", RELAY_AUTH),
        ("XOAUTH2_TOKEN_ENDPOINT", RELAY_AUTH),
        ("SASL_RELAYHOST", RELAY_AUTH),
        ("RELAYHOST", {}),
        ("SMTP_HEADER_CHECKS", {}),
        ("MAILSTACK_ROOT", {}),
        ("MAILSTACK_LISTEN_SUBMISSION", {}),
        ("TZ", {}),
        ("RELAYHOST_TLS_LEVEL", {}),
    ],
)
def test_relay_refuses_a_newline_in_any_value_that_reaches_a_file(
    variable: str, extra: dict[str, str]
) -> None:
    problems = relay_problems(**extra, **{variable: INJECTED})
    assert variable in problems, problems
    assert problems[variable].startswith("contains a control character (newline)")


def test_the_reported_injection_renders_nothing() -> None:
    """The case from the report: a second mynetworks line in main.cf."""
    problems = relay_problems(POSTFIX_smtpd_banner="$myhostname ESMTP\nmynetworks = 0.0.0.0/0")
    assert list(problems) == ["POSTFIX_smtpd_banner"]


def test_hostname_is_checked_when_it_names_the_relay() -> None:
    env = {k: v for k, v in RELAY.items() if k != "POSTFIX_myhostname"}
    with pytest.raises(ConfigError) as refused:
        load_relay_settings({**env, "HOSTNAME": INJECTED})
    assert [p.variable for p in refused.value.problems] == ["HOSTNAME"]
    # ignored (and so harmless) when POSTFIX_myhostname is set
    load_relay_settings({**RELAY, "HOSTNAME": INJECTED})


@pytest.mark.parametrize(
    ("character", "name"),
    [
        ("\n", "newline"),
        ("\r", "carriage return"),
        ("\x00", "NUL"),
        ("\x1b", "escape"),
        ("\x0b", "vertical tab"),
        ("\x7f", "DEL"),
        ("\x85", "U+0085"),
        ("\u2028", "U+2028"),
    ],
)
def test_every_control_character_is_named(character: str, name: str) -> None:
    problems = relay_problems(POSTFIX_smtpd_banner=f"ready{character}now")
    assert problems["POSTFIX_smtpd_banner"].startswith(f"contains a control character ({name})")


def test_a_trailing_newline_is_refused_too() -> None:
    """Only `_FILE` contents lose one final line break; a value as given is taken as it is."""
    assert "POSTFIX_smtpd_banner" in relay_problems(POSTFIX_smtpd_banner="ready\n")
    assert "RELAYHOST_PASSWORD" in relay_problems(**RELAY_AUTH, RELAYHOST_PASSWORD="pw\n")


def test_tabs_spaces_and_other_text_are_fine() -> None:
    settings = load_relay_settings(
        {
            **RELAY,
            **RELAY_AUTH,
            "POSTFIX_smtpd_banner": "$myhostname\tESMTP  ready, ünïcode",
            "RELAYHOST_PASSWORD": " p\tw with spaces ",
        }
    )
    assert settings.postfix_overrides["smtpd_banner"] == "$myhostname\tESMTP  ready, ünïcode"
    assert settings.relay_auth == ("[smtp.example.com]:587", "user", " p\tw with spaces ")


def test_line_breaks_between_list_items_are_separators() -> None:
    """Lists are split into items that are checked one by one; the breaks never reach a file."""
    settings = load_relay_settings(
        {
            **RELAY,
            "ALLOWED_SENDER_DOMAINS": "example.com\nexample.org\r\n",
            "MASQUERADED_DOMAINS": "example.com\n",
            "POSTFIX_mynetworks": "127.0.0.0/8\n10.0.0.0/8",
        }
    )
    assert settings.allowed_sender_domains == ("example.com", "example.org")
    assert settings.mynetworks == ("127.0.0.0/8", "10.0.0.0/8")
    params = main_cf_parameters(settings, Paths(settings.root), dkim_enabled=False)
    assert params["mynetworks"] == "127.0.0.0/8, 10.0.0.0/8"
    problems = relay_problems(ALLOWED_SENDER_DOMAINS="example.com\x00", MYNETWORKS="::1\x07")
    assert problems["ALLOWED_SENDER_DOMAINS"].startswith("contains a control character (NUL)")
    assert problems["MYNETWORKS"].startswith("contains a control character (U+0007)")


def test_pass_through_key_names_are_matched_whole() -> None:
    problems = relay_problems(**{"POSTFIX_smtpd_banner\n": "x", "OPENDKIM_Mode\n": "s"})
    assert "is not a valid configuration key name" in problems["POSTFIX_smtpd_banner\n"]
    assert "is not a valid configuration key name" in problems["OPENDKIM_Mode\n"]


@pytest.mark.parametrize(
    ("contents", "accepted"),
    [
        ("s3cret\n", True),
        ("s3cret\r\n", True),
        ("s3cret", True),
        ("s3cret\n\n", False),
        ("s3cret\nsecond line\n", False),
        ("s3\x00cret", False),
    ],
)
def test_secret_files_lose_one_line_break_and_nothing_else(
    tmp_path: Path, contents: str, accepted: bool
) -> None:
    secret = tmp_path / "password"
    secret.write_bytes(contents.encode())
    env = {**RELAY, **RELAY_AUTH, "RELAYHOST_PASSWORD_FILE": str(secret)}
    if accepted:
        auth = load_relay_settings(env).relay_auth
        assert auth is not None
        assert auth[2] == "s3cret"
        return
    with pytest.raises(ConfigError) as refused:
        load_relay_settings(env)
    (problem,) = refused.value.problems
    assert problem.variable == "RELAYHOST_PASSWORD_FILE"
    assert str(secret) in problem.message
    assert "control character" in problem.message
    assert "s3cret" not in str(refused.value), "the secret itself is never shown"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    username = tmp_path / "username"
    username.write_text("user\nname\n")
    problems = relay_problems(
        ALLOWED_SENDER_DOMAINS="",
        RELAYHOST="[smtp.example.com]:587",
        RELAYHOST_USERNAME_FILE=str(username),
        RELAYHOST_PASSWORD="pw\r",
        POSTFIX_smtpd_banner=INJECTED,
        OPENDKIM_Mode="s\n",
        LOG_FORMAT="xml",
    )
    assert set(problems) >= {
        "ALLOWED_SENDER_DOMAINS",
        "RELAYHOST_USERNAME_FILE",
        "RELAYHOST_PASSWORD",
        "POSTFIX_smtpd_banner",
        "OPENDKIM_Mode",
        "LOG_FORMAT",
    }, problems


def test_without_the_check_the_injection_would_reach_main_cf() -> None:
    """Why it matters: the renderer writes a value as it is, one parameter per line."""
    settings = load_relay_settings(RELAY)
    params = main_cf_parameters(settings, Paths(settings.root), dkim_enabled=False)
    params["smtpd_banner"] = INJECTED
    lines = render_main_cf(params).splitlines()
    assert "mynetworks = 0.0.0.0/0" in lines


@pytest.mark.parametrize(
    ("variable", "extra"),
    [
        ("POSTFIX_smtpd_banner", {}),
        ("POSTFIX_mynetworks", {}),
        ("POSTFIX_myhostname", {}),
        ("OPENDKIM_Canonicalization", {}),
        ("RELAYHOST_PASSWORD", RELAY_AUTH),
        ("RELAYHOST_USERNAME", {"RELAYHOST": "[smtp.example.com]:587"}),
        ("RELAYHOST", {}),
        ("MAILSTACK_DATABASE_URL", {}),
        ("MAILSTACK_LISTEN_IMAP", {}),
        ("MAILSTACK_ROOT", {}),
        ("TZ", {}),
    ],
)
def test_server_refuses_a_newline_in_any_value_that_reaches_a_file(
    variable: str, extra: dict[str, str]
) -> None:
    problems = server_problems(**extra, **{variable: INJECTED})
    assert variable in problems, problems
    assert problems[variable].startswith("contains a control character (newline)")


def test_server_secret_files_and_every_problem_at_once(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("pw\nrelayhost = [evil.example]\n")
    problems = server_problems(
        **RELAY_AUTH,
        RELAYHOST_PASSWORD_FILE=str(password),
        POSTFIX_smtpd_banner=INJECTED,
        MAILSTACK_TLS_CERT_FILE="/nonexistent\n",
        MAILSTACK_TLS_KEY_FILE="/nonexistent",
    )
    assert set(problems) >= {
        "RELAYHOST_PASSWORD_FILE",
        "POSTFIX_smtpd_banner",
        "MAILSTACK_TLS_CERT_FILE",
    }, problems
    settings = load_server_settings(
        {**SERVER, **RELAY_AUTH, "RELAYHOST_PASSWORD": "pw", "POSTFIX_smtpd_banner": "a\tb"}
    )
    assert settings.postfix_overrides == {"smtpd_banner": "a\tb"}


def test_check_and_run_refuse_and_render_nothing() -> None:
    """`mailstack check` and `mailstack run` exit 78 naming the variable; no file is written."""
    with private_root() as root:
        env = base_env(
            root, free_port(), ALLOWED_SENDER_DOMAINS="example.com", POSTFIX_smtpd_banner=INJECTED
        )
        checked = subprocess.run(
            [*MAILSTACK, "check"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert checked.returncode == 78, checked.stderr
        assert (
            "error: POSTFIX_smtpd_banner: contains a control character (newline)" in checked.stderr
        )
        relay = Relay(root, env)
        relay.start(wait=False)
        try:
            assert relay.wait_exit() == 78
        finally:
            relay.cleanup()
        assert "POSTFIX_smtpd_banner" in relay.log
        assert not (root / "etc/postfix/main.cf").exists(), "nothing is written"
        assert not (root / "etc/opendkim/opendkim.conf").exists()
