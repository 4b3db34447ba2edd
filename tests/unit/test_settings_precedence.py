"""Which value wins when a setting can come from several places, and how problems are told."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mailstack.errors import ConfigError
from mailstack.paths import Paths
from mailstack.render.postfix import main_cf_parameters, render_main_cf, render_postfix
from mailstack.render.server import render_server_postfix
from mailstack.settings.environ import SECRET_VARIABLES, load_relay_settings
from mailstack.settings.server import load_server_settings
from tests.unit.support import (
    RELAY_AUTH,
    RELAY_ENV,
    SERVER_ENV,
    MainCf,
    ProblemsOf,
    RelayLoader,
    ServerLoader,
    content,
    parameter,
)


def secret_file(tmp_path: Path, text: str, name: str = "secret") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return str(path)


# -- NAME vs NAME_FILE ----------------------------------------------------------------------


@pytest.mark.parametrize("name", SECRET_VARIABLES)
def test_value_and_file_together_is_an_error(
    relay_problems: ProblemsOf, tmp_path: Path, name: str
) -> None:
    """Setting both NAME and NAME_FILE is refused, naming NAME and both variables."""
    both = {name: "inline", f"{name}_FILE": secret_file(tmp_path, "from-file\n")}
    problems = relay_problems(**{**RELAY_AUTH, **both})
    messages = {p.variable: p.message for p in problems}
    assert messages.get(name) == f"set both {name} and {name}_FILE; set only one"


def test_server_refuses_value_and_file_together(tmp_path: Path) -> None:
    """The server profile applies the same rule to the relay-host password."""
    env = {
        **SERVER_ENV,
        **RELAY_AUTH,
        "RELAYHOST_PASSWORD": "inline",
        "RELAYHOST_PASSWORD_FILE": secret_file(tmp_path, "pw\n"),
    }
    with pytest.raises(ConfigError) as refused:
        load_server_settings(env)
    assert [p.variable for p in refused.value.problems] == ["RELAYHOST_PASSWORD"]


@pytest.mark.parametrize(
    ("make_path", "reason"),
    [
        (lambda tmp: tmp / "missing", "No such file or directory"),
        (lambda tmp: tmp, "Is a directory"),
    ],
    ids=["missing", "directory"],
)
def test_unreadable_secret_file_is_an_error(
    relay_problems: ProblemsOf, tmp_path: Path, make_path: Callable[[Path], Path], reason: str
) -> None:
    """A NAME_FILE that cannot be read is refused, naming NAME_FILE, the path and why."""
    path = make_path(tmp_path)
    problems = relay_problems(**RELAY_AUTH, RELAYHOST_PASSWORD_FILE=str(path))
    assert [(p.variable, p.message) for p in problems] == [
        ("RELAYHOST_PASSWORD_FILE", f"cannot read {path}: {reason}")
    ]


def test_secret_files_lose_their_trailing_newline(relay: RelayLoader, tmp_path: Path) -> None:
    """Username and password read from files reach sasl_passwd without the final newline."""
    settings = relay(
        RELAYHOST="[smtp.example.com]:587",
        RELAYHOST_USERNAME_FILE=secret_file(tmp_path, "user@example.com\n", "user"),
        RELAYHOST_PASSWORD_FILE=secret_file(tmp_path, "s3cret pw\r\n", "password"),
    )
    files = render_postfix(settings, Paths(settings.root), False)
    assert content(files, "sasl_passwd") == "[smtp.example.com]:587\tuser@example.com:s3cret pw\n"


def test_server_secret_file_loses_its_trailing_newline(
    server: ServerLoader, tmp_path: Path
) -> None:
    """The server's sasl_passwd gets the file's password without the final newline."""
    settings = server(**RELAY_AUTH, RELAYHOST_PASSWORD_FILE=secret_file(tmp_path, "pw\n"))
    files = render_server_postfix(settings, Paths(settings.root), False)
    assert content(files, "sasl_passwd") == "[smtp.example.com]:587\tuser:pw\n"


def test_an_empty_value_leaves_the_file_in_charge(relay: RelayLoader, tmp_path: Path) -> None:
    """NAME set but empty next to NAME_FILE is not "both": the file's value is used."""
    settings = relay(
        **RELAY_AUTH,
        RELAYHOST_PASSWORD="",
        RELAYHOST_PASSWORD_FILE=secret_file(tmp_path, "from-file\n"),
    )
    assert settings.relay_auth == ("[smtp.example.com]:587", "user", "from-file")


# -- deprecated aliases -----------------------------------------------------------------------

ALIASES = [
    ("MYNETWORKS", "POSTFIX_mynetworks", "192.0.2.0/24", "198.51.100.0/24", "mynetworks"),
    ("MESSAGE_SIZE_LIMIT", "POSTFIX_message_size_limit", "1000", "2000", "message_size_limit"),
    (
        "RELAYHOST_TLS_LEVEL",
        "POSTFIX_smtp_tls_security_level",
        "encrypt",
        "verify",
        "smtp_tls_security_level",
    ),
]


def main_cf_with_notices(env: dict[str, str]) -> tuple[list[str], list[str]]:
    """main.cf lines and the deprecation notices for RELAY_ENV + env."""
    notices: list[str] = []
    settings = load_relay_settings({**RELAY_ENV, **env}, notices)
    params = main_cf_parameters(settings, Paths(settings.root), dkim_enabled=False)
    return render_main_cf(params).splitlines(), notices


@pytest.mark.parametrize(("alias", "name", "old", "new", "param"), ALIASES)
def test_deprecated_alias_wins_with_a_notice(
    alias: str, name: str, old: str, new: str, param: str
) -> None:
    """Alias and POSTFIX_ name both set: the alias's value is used, and its use is noted."""
    lines, notices = main_cf_with_notices({alias: old, name: new})
    assert parameter(lines, param) == old
    assert notices == [f"{alias} is deprecated; use {name} instead"]


@pytest.mark.parametrize(("alias", "name", "old", "new", "param"), ALIASES)
def test_deprecated_alias_alone_still_works(
    alias: str, name: str, old: str, new: str, param: str
) -> None:
    """The alias alone sets the parameter with a notice; the POSTFIX_ name, silently."""
    lines, notices = main_cf_with_notices({alias: old})
    assert parameter(lines, param) == old
    assert notices == [f"{alias} is deprecated; use {name} instead"]
    lines, notices = main_cf_with_notices({name: new})
    assert parameter(lines, param) == new
    assert notices == []


def test_empty_deprecated_alias_is_ignored() -> None:
    """An empty alias (e.g. left in a compose file) neither wins nor warns."""
    lines, notices = main_cf_with_notices({"MYNETWORKS": "", "POSTFIX_mynetworks": "192.0.2.0/24"})
    assert parameter(lines, "mynetworks") == "192.0.2.0/24"
    assert notices == []


# -- POSTFIX_* / OPENDKIM_* pass-through --------------------------------------------------------


@pytest.mark.parametrize("param", ["smtputf8_enable", "header_size_limit", "smtpd_helo_required"])
@pytest.mark.parametrize("empty", ["", "  "])
def test_empty_pass_through_removes_a_default(
    relay_main_cf: MainCf, param: str, empty: str
) -> None:
    """POSTFIX_<param> empty (or blank) removes mailstack's line: Postfix's default applies."""
    assert parameter(relay_main_cf(), param) is not None, "mailstack sets it by default"
    assert parameter(relay_main_cf(**{f"POSTFIX_{param}": empty}), param) is None


@pytest.mark.parametrize(
    ("variable", "param", "default"),
    [
        (
            "POSTFIX_mynetworks",
            "mynetworks",
            "127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16",
        ),
        ("POSTFIX_message_size_limit", "message_size_limit", "0"),
        ("POSTFIX_smtp_tls_security_level", "smtp_tls_security_level", "may"),
    ],
)
def test_empty_first_class_postfix_setting_means_its_default(
    relay_main_cf: MainCf, variable: str, param: str, default: str
) -> None:
    """The POSTFIX_ names with a README default fall back to it when empty, not to nothing."""
    assert parameter(relay_main_cf(**{variable: ""}), param) == default


def test_empty_myhostname_falls_back_to_hostname(relay_main_cf: MainCf) -> None:
    """POSTFIX_myhostname empty: $HOSTNAME names the relay."""
    lines = relay_main_cf(POSTFIX_myhostname="", HOSTNAME="box.example.com")
    assert parameter(lines, "myhostname") == "box.example.com"


SERVICE_LINKS = {
    "POSTFIX_SERVICE_HOST": "10.0.0.1",
    "POSTFIX_MAIL_SERVICE_PORT": "tcp://10.0.0.1:587",
    "POSTFIX_PORT_587_TCP_ADDR": "10.0.0.1",
    "OPENDKIM_SERVICE_PORT": "8891",
}


def test_all_capital_names_are_ignored(relay: RelayLoader, relay_main_cf: MainCf) -> None:
    """All-capital POSTFIX_/OPENDKIM_ names are ignored; smtp_tls_CAfile still passes."""
    lines = relay_main_cf(**SERVICE_LINKS, POSTFIX_smtp_tls_CAfile="/etc/ssl/mine.pem")
    text = "\n".join(lines)
    assert "SERVICE" not in text
    assert "10.0.0.1" not in text
    assert parameter(lines, "smtp_tls_CAfile") == "/etc/ssl/mine.pem"
    assert relay(**SERVICE_LINKS).opendkim_overrides == {}


def test_server_ignores_all_capital_names(server: ServerLoader) -> None:
    """The server profile ignores the same service links."""
    settings = server(**SERVICE_LINKS)
    assert settings.postfix_overrides == {}
    assert settings.opendkim_overrides == {}


def test_other_bad_pass_through_names_are_errors(relay_problems: ProblemsOf) -> None:
    """A name that is neither all capitals nor a valid key is refused, not silently dropped."""
    problems = relay_problems(POSTFIX_Smtpd_banner="x", OPENDKIM_mode="s")
    assert {p.variable for p in problems} == {"POSTFIX_Smtpd_banner", "OPENDKIM_mode"}
    assert all("is not a valid configuration key name" in p.message for p in problems)


# -- every problem at once ------------------------------------------------------------------

#: Each variable here is wrong on its own account.
BAD_RELAY = {
    "ALLOWED_SENDER_DOMAINS": "",
    "RELAYHOST": "[smtp.example.com",
    "POSTFIX_message_size_limit": "10M",
    "MAILSTACK_LISTEN_SUBMISSION": "nowhere",
    "DKIM_SELECTOR": "bad selector!",
    "RELAYHOST_PASSWORD_FILE": "/nonexistent/password",
    "LOG_FORMAT": "xml",
    "MAILSTACK_STOP_TIMEOUT": "soon",
    "POSTFIX_Bad": "x",
}
BAD_SERVER = {
    "MAILSTACK_MAIL_USER": "mailstack-no-such-user",
    "MAILSTACK_LISTEN_IMAP": "nowhere",
    "MAILSTACK_TLS_CERT_FILE": "/nonexistent/cert.pem",
    "MAILSTACK_TLS_KEY_FILE": "/nonexistent/key.pem",
    "RELAYHOST_USERNAME": "user",
    "POSTFIX_message_size_limit": "big",
    "LOG_FORMAT": "xml",
}


def test_relay_reports_every_problem_at_once(relay_problems: ProblemsOf) -> None:
    """Each bad variable is named exactly once in one ConfigError, and nothing else is."""
    problems = relay_problems(**BAD_RELAY)
    assert sorted(p.variable for p in problems) == sorted(BAD_RELAY)


def test_server_reports_every_problem_at_once() -> None:
    """The server loader too names each bad variable once in one ConfigError."""
    with pytest.raises(ConfigError) as refused:
        load_server_settings({**SERVER_ENV, **BAD_SERVER})
    assert sorted(p.variable for p in refused.value.problems) == sorted(BAD_SERVER)


def test_config_error_text_names_each_problem() -> None:
    """The error's text (what `mailstack check` builds on) carries every `variable: message`."""
    with pytest.raises(ConfigError) as refused:
        load_relay_settings({**RELAY_ENV, **BAD_RELAY}, [])
    text = str(refused.value)
    for problem in refused.value.problems:
        assert f"{problem.variable}: {problem.message}" in text
