"""How the profiles' settings are put together: one base, the sources in their order, every
problem at once, MAILSTACK_ROOT and the datastore's location, the greylisting settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailstack.errors import ConfigError, InvalidInput, Problem
from mailstack.settings.base import ProfileSettings
from mailstack.settings.environ import load_relay_settings
from mailstack.settings.locations import (
    DATABASE_URL_VARIABLE,
    ROOT_VARIABLE,
    database_location,
    default_database,
    mailstack_root,
)
from mailstack.settings.model import RelaySettings
from mailstack.settings.server import DEFAULT_MESSAGE_SIZE_LIMIT, ServerSettings
from mailstack.settings.sources import (
    DeprecatedNames,
    Environment,
    PassThroughs,
    Reading,
    SecretFiles,
)
from tests.unit.support import (
    RELAY_AUTH,
    RELAY_ENV,
    ROOT,
    SERVER_ENV,
    ProblemsOf,
    RelayLoader,
    ServerLoader,
)


def server_problems(**env: str) -> list[Problem]:
    """Every problem the server loader reports for SERVER_ENV + env."""
    with pytest.raises(ConfigError) as refused:
        ServerSettings.load({**SERVER_ENV, **env})
    return refused.value.problems


# -- one base, a subclass per profile ------------------------------------------------------


@pytest.mark.parametrize("profile", [RelaySettings, ServerSettings])
def test_each_profile_extends_the_common_settings(profile: type[ProfileSettings]) -> None:
    """The common fields are declared once, in the base: same variable in both profiles."""
    assert issubclass(profile, ProfileSettings)
    for name, field in ProfileSettings.model_fields.items():
        assert profile.model_fields[name].alias == field.alias


def test_a_profile_may_give_a_common_setting_its_own_default(
    relay: RelayLoader, server: ServerLoader
) -> None:
    assert (relay().message_size_limit, server().message_size_limit) == (
        0,
        DEFAULT_MESSAGE_SIZE_LIMIT,
    )
    assert (relay().dkim_autogenerate, server().dkim_autogenerate) == (False, True)
    assert server(POSTFIX_message_size_limit="1000").message_size_limit == 1000


def test_every_field_has_its_own_variable() -> None:
    """Each variable sets one field, the greylisting list aside (it feeds two)."""
    for profile in (RelaySettings, ServerSettings):
        aliases = [f.alias for f in profile.model_fields.values()]
        repeated = {a for a in aliases if aliases.count(a) > 1}
        assert repeated <= {"MAILSTACK_GREYLIST_ALLOW"}


def test_the_environment_given_is_the_only_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loaders never read os.environ (or a .env file): tests and `check` pass their own."""
    monkeypatch.setenv("LOG_FORMAT", "xml")
    monkeypatch.setenv("POSTFIX_smtpd_banner", "from os.environ")
    settings = load_relay_settings(RELAY_ENV, [])
    assert settings.log_format == "plain"
    assert settings.postfix_overrides == {}


# -- the sources, in order -------------------------------------------------------------------


def test_sources_apply_in_the_declared_order() -> None:
    """Environment, then `_FILE` secrets, then deprecated names, then the pass-through."""
    layers = RelaySettings.sources(Reading({}, []))
    assert [type(layer) for layer in layers] == [
        Environment,
        SecretFiles,
        DeprecatedNames,
        PassThroughs,
    ]


def test_a_later_layer_overrides_an_earlier_one() -> None:
    """A deprecated name (third layer) beats the variable in the environment (first)."""
    notices: list[str] = []
    env = {**RELAY_ENV, "POSTFIX_message_size_limit": "2000", "MESSAGE_SIZE_LIMIT": "1000"}
    assert load_relay_settings(env, notices).message_size_limit == 1000
    assert notices == ["MESSAGE_SIZE_LIMIT is deprecated; use POSTFIX_message_size_limit instead"]


def test_a_rule_broken_through_a_deprecated_name_names_it() -> None:
    """The problem names the variable that was set, here RELAYHOST_TLS_LEVEL."""
    env = {**RELAY_ENV, **RELAY_AUTH, "RELAYHOST_PASSWORD": "pw", "RELAYHOST_TLS_LEVEL": "none"}
    with pytest.raises(ConfigError) as refused:
        load_relay_settings(env, [])
    assert [p.variable for p in refused.value.problems] == ["RELAYHOST_TLS_LEVEL"]


def test_the_server_keeps_no_deprecated_names(server: ServerLoader) -> None:
    """boky/postfix's old names are the relay's; the server ignores them."""
    settings = server(MESSAGE_SIZE_LIMIT="1000", RELAYHOST_TLS_LEVEL="encrypt")
    assert settings.message_size_limit == DEFAULT_MESSAGE_SIZE_LIMIT
    assert settings.smtp_tls_security_level == "may"


def test_a_blank_value_next_to_a_secret_file_is_set(
    relay_problems: ProblemsOf, tmp_path: Path
) -> None:
    """Only an empty NAME leaves NAME_FILE in charge; a blank one next to it is refused as
    setting both."""
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    problems = relay_problems(
        **RELAY_AUTH, RELAYHOST_PASSWORD="  ", RELAYHOST_PASSWORD_FILE=str(secret)
    )
    assert [p.variable for p in problems] == ["RELAYHOST_PASSWORD"]


def test_an_empty_secret_file_is_no_secret(relay: RelayLoader, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("\n")
    assert relay(**RELAY_AUTH, RELAYHOST_PASSWORD_FILE=str(secret)).relay_auth is None


def test_only_secrets_come_from_files(relay: RelayLoader, tmp_path: Path) -> None:
    """`_FILE` is read for the secrets, not for any variable."""
    domains = tmp_path / "domains"
    domains.write_text("example.org\n")
    assert relay(RELAYHOST_FILE=str(domains)).relayhost is None


def test_the_server_reads_its_secrets_from_files_too(server: ServerLoader, tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.write_text("from-file\n")
    settings = server(RELAYHOST="[smtp.example.com]:587", RELAYHOST_USERNAME_FILE=str(user))
    assert settings.relayhost_username == "from-file"
    missing = tmp_path / "missing"
    problems = server_problems(**RELAY_AUTH, RELAYHOST_PASSWORD_FILE=str(missing))
    assert problems == [
        Problem("RELAYHOST_PASSWORD_FILE", f"cannot read {missing}: No such file or directory")
    ]


def test_first_class_postfix_settings_do_not_pass_through_again(
    relay: RelayLoader, server: ServerLoader
) -> None:
    """A POSTFIX_ variable that is a setting of the profile is not also an override; the
    server has no mynetworks setting, so there POSTFIX_mynetworks passes through."""
    env = {
        "POSTFIX_mynetworks": "192.0.2.0/24",
        "POSTFIX_message_size_limit": "1000",
        "POSTFIX_smtp_tls_security_level": "encrypt",
        "POSTFIX_smtpd_banner": "hello",
    }
    assert relay(**env).postfix_overrides == {"smtpd_banner": "hello"}
    assert server(**env).postfix_overrides == {
        "mynetworks": "192.0.2.0/24",
        "smtpd_banner": "hello",
    }


def test_empty_and_blank_mean_the_default_but_disable_a_listener(server: ServerLoader) -> None:
    settings = server(MAILSTACK_STOP_TIMEOUT=" ", TZ="", MAILSTACK_LISTEN_IMAP=" ")
    assert (settings.stop_timeout, settings.tz, settings.listen_imap) == (8.0, None, None)


# -- every problem at once -------------------------------------------------------------------


def test_problems_of_sources_values_and_rules_come_together(relay_problems: ProblemsOf) -> None:
    """In that order: the sources' (in the order they apply), the values', the rules'."""
    problems = relay_problems(
        POSTFIX_smtpd_banner="a\nb",  # refused by the pass-through
        RELAYHOST_PASSWORD_FILE="/nonexistent",  # a secret file that cannot be read
        MAILSTACK_XOAUTH2_PORT="0",  # a bad value
        TZ="Europe/\x1b",  # refused by the environment
        ALLOWED_SENDER_DOMAINS="",  # a rule across fields
    )
    assert [p.variable for p in problems] == [
        "TZ",
        "RELAYHOST_PASSWORD_FILE",
        "POSTFIX_smtpd_banner",
        "MAILSTACK_XOAUTH2_PORT",
        "ALLOWED_SENDER_DOMAINS",
    ]


def test_rules_see_a_failed_value_as_its_default(relay_problems: ProblemsOf) -> None:
    """Submission fails to parse, so its default (port 587) meets the SMTP listener's."""
    problems = relay_problems(
        MAILSTACK_LISTEN_SUBMISSION="nowhere", MAILSTACK_LISTEN_SMTP="0.0.0.0:587"
    )
    assert [p.variable for p in problems] == [
        "MAILSTACK_LISTEN_SUBMISSION",
        "MAILSTACK_LISTEN_SMTP",
    ]
    assert problems[1].message == (
        "0.0.0.0:587 clashes with MAILSTACK_LISTEN_SUBMISSION=0.0.0.0:587"
    )


def test_server_rules_are_all_told() -> None:
    problems = server_problems(
        MAILSTACK_LISTEN_IMAPS="0.0.0.0:143",
        MAILSTACK_TLS_CERT_FILE="/nonexistent/cert.pem",
        RELAYHOST_USERNAME="user",
        MAILSTACK_STOP_TIMEOUT="soon",
    )
    assert {p.variable for p in problems} == {
        "MAILSTACK_LISTEN_IMAPS",
        "MAILSTACK_TLS_KEY_FILE",
        "RELAYHOST_USERNAME",
        "MAILSTACK_STOP_TIMEOUT",
    }


# -- MAILSTACK_ROOT and the datastore ----------------------------------------------------------


def test_root_and_database_variables_are_the_settings_own() -> None:
    assert ProfileSettings.variable("root") == ROOT_VARIABLE
    assert ServerSettings.variable("database_url") == DATABASE_URL_VARIABLE


@pytest.mark.parametrize(
    ("given", "root"), [(None, "/"), ("", "/"), (" /srv/x ", "/srv/x"), ("/srv/y/", "/srv/y")]
)
def test_mailstack_root(given: str | None, root: str) -> None:
    environ = {} if given is None else {ROOT_VARIABLE: given}
    assert mailstack_root(environ) == Path(root)


def test_a_relative_root_is_refused_everywhere(relay_problems: ProblemsOf) -> None:
    message = "must be an absolute path (got srv)"
    with pytest.raises(InvalidInput) as refused:
        mailstack_root({ROOT_VARIABLE: "srv"})
    assert (refused.value.field, refused.value.message) == (ROOT_VARIABLE, message)
    assert Problem(ROOT_VARIABLE, message) in relay_problems(MAILSTACK_ROOT="srv")
    assert Problem(ROOT_VARIABLE, message) in server_problems(MAILSTACK_ROOT="srv")


@pytest.mark.parametrize(
    "env",
    [{}, {DATABASE_URL_VARIABLE: "postgresql://u@db/mail"}, {DATABASE_URL_VARIABLE: " "}],
    ids=["default", "url", "blank"],
)
def test_server_and_admin_commands_find_the_same_datastore(
    server: ServerLoader, env: dict[str, str]
) -> None:
    settings = server(**env)
    found = database_location(settings.root, settings.database_url)
    assert found == default_database({**SERVER_ENV, **env})
    expected = env.get(DATABASE_URL_VARIABLE, "").strip()
    assert found == (expected or str(ROOT / "var/lib/mailstack/mailstack.db"))


def test_the_lean_modules_do_not_import_pydantic() -> None:
    """The supervisor and the store import these; pydantic would slow every start."""
    code = (
        "import sys, mailstack.settings.values, mailstack.settings.locations; "
        "sys.exit('pydantic' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- greylisting (server) --------------------------------------------------------------------


def test_greylisting_defaults(server: ServerLoader) -> None:
    settings = server()
    assert settings.greylist is True
    assert (settings.greylist_delay, settings.greylist_autoallow) == (300, 5)
    assert (settings.greylist_allow_networks, settings.greylist_allow_domains) == ((), ())


@pytest.mark.parametrize(("value", "on"), [("off", False), ("0", False), ("yes", True), ("", True)])
def test_greylisting_switch(server: ServerLoader, value: str, on: bool) -> None:
    assert server(MAILSTACK_GREYLIST=value).greylist is on


def test_greylisting_numbers(server: ServerLoader) -> None:
    settings = server(MAILSTACK_GREYLIST_DELAY=" 60 ", MAILSTACK_GREYLIST_AUTOALLOW="0")
    assert (settings.greylist_delay, settings.greylist_autoallow) == (60, 0)
    assert server(MAILSTACK_GREYLIST_DELAY="0").greylist_delay == 0


def test_greylisting_allow_list(server: ServerLoader) -> None:
    """Networks (CIDR, an address, IPv6 bare or bracketed) and domains, in any mix."""
    settings = server(
        MAILSTACK_GREYLIST_ALLOW="192.0.2.0/24, 198.51.100.7\n2001:db8::/32 [2001:db8:1::]/48 "
        "::1 Bücher.Example example.org, example.org 192.0.2.0/24"
    )
    assert settings.greylist_allow_networks == (
        "192.0.2.0/24",
        "198.51.100.7/32",
        "2001:db8::/32",
        "2001:db8:1::/48",
        "::1/128",
    )
    assert settings.greylist_allow_domains == ("xn--bcher-kva.example", "example.org")
    assert server(MAILSTACK_GREYLIST_ALLOW="example.org").greylist_allow_networks == ()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MAILSTACK_GREYLIST_DELAY", "-1", "Input should be greater than or equal to 0"),
        ("MAILSTACK_GREYLIST_DELAY", "5m", "must be a number (got '5m')"),
        ("MAILSTACK_GREYLIST_AUTOALLOW", "-2", "Input should be greater than or equal to 0"),
        ("MAILSTACK_GREYLIST_AUTOALLOW", "many", "must be a number (got 'many')"),
        (
            "MAILSTACK_GREYLIST_ALLOW",
            "example.org 10.0.0.0/33",
            "'10.0.0.0/33' is neither a network (like 192.0.2.0/24) nor a domain name",
        ),
        (
            "MAILSTACK_GREYLIST_ALLOW",
            "example.org\x00",
            "contains a control character (NUL); a value must fit on one line of a "
            "configuration file",
        ),
    ],
)
def test_bad_greylisting_values_are_named(variable: str, value: str, message: str) -> None:
    """One problem each, naming the variable, even where two fields read it."""
    assert server_problems(**{variable: value}) == [Problem(variable, message)]


def test_greylisting_is_the_servers() -> None:
    """The relay has no greylisting settings."""
    assert not any(name.startswith("greylist") for name in RelaySettings.model_fields)


# -- spam filtering (server) ---------------------------------------------------------------


def test_spam_filtering_defaults(server: ServerLoader) -> None:
    """On, rspamd's own scores and DNS lists, 4xx while rspamd is down, test patterns off."""
    settings = server()
    assert settings.spam is True
    options = settings.rspamd_options()
    assert (options.reject, options.add_header, options.greylist) == (15.0, 6.0, None)
    assert options.dns_lists is None  # rspamd's stock lists
    assert (options.host_checks, options.test_patterns) == (True, False)
    assert settings.spam_failure == "defer"


def test_spam_dns_lists_unset_empty_or_named(server: ServerLoader) -> None:
    assert server(MAILSTACK_SPAM_RBL="").rspamd_options().dns_lists == ()
    assert server(MAILSTACK_SPAM_RBL=" ").rspamd_options().dns_lists == ()
    named = server(MAILSTACK_SPAM_RBL="spamhaus, DBL").rspamd_options().dns_lists
    assert named == ("spamhaus", "DBL")


def test_spam_scores_and_switches(server: ServerLoader) -> None:
    settings = server(
        MAILSTACK_SPAM_REJECT_SCORE="20",
        MAILSTACK_SPAM_JUNK_SCORE=" 5.5 ",
        MAILSTACK_SPAM_GREYLIST_SCORE="4",
        MAILSTACK_SPAM_FAILURE="ACCEPT",
        MAILSTACK_SPAM_NAMESERVERS="127.0.0.1:5353 [::1]:53",
    )
    options = settings.rspamd_options()
    assert (options.reject, options.add_header, options.greylist) == (20.0, 5.5, 4.0)
    assert options.nameservers == ("127.0.0.1:5353", "[::1]:53")
    assert settings.spam_failure == "accept"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"MAILSTACK_SPAM_JUNK_SCORE": "15"},
            Problem("MAILSTACK_SPAM_JUNK_SCORE", "must be below MAILSTACK_SPAM_REJECT_SCORE (15)"),
        ),
        (
            {"MAILSTACK_SPAM_GREYLIST_SCORE": "7"},
            Problem("MAILSTACK_SPAM_GREYLIST_SCORE", "must be below MAILSTACK_SPAM_JUNK_SCORE (6)"),
        ),
        (
            {"MAILSTACK_SPAM_REJECT_SCORE": "lots"},
            Problem(
                "MAILSTACK_SPAM_REJECT_SCORE",
                "must be a number (got 'lots')",
            ),
        ),
        (
            {"MAILSTACK_SPAM_GREYLIST_SCORE": "nan"},
            Problem("MAILSTACK_SPAM_GREYLIST_SCORE", "must be a finite number (got 'nan')"),
        ),
        (
            {"MAILSTACK_SPAM_FAILURE": "bounce"},
            Problem("MAILSTACK_SPAM_FAILURE", "must be one of 'defer' or 'accept' (got 'bounce')"),
        ),
    ],
)
def test_bad_spam_values_are_named(env: dict[str, str], problem: Problem) -> None:
    assert server_problems(**env) == [problem]


def test_an_unknown_dns_list_is_named_with_the_known_ones() -> None:
    [problem] = server_problems(MAILSTACK_SPAM_RBL="spamhaus nolist")
    assert problem.variable == "MAILSTACK_SPAM_RBL"
    assert problem.message.startswith("unknown rule(s) nolist; rspamd has spamhaus, ")


def test_spam_scores_are_not_checked_when_spam_filtering_is_off(server: ServerLoader) -> None:
    assert server(MAILSTACK_SPAM="off", MAILSTACK_SPAM_JUNK_SCORE="99").spam is False


def test_spam_training_schedule_and_minimum(server: ServerLoader) -> None:
    settings = server()
    assert (settings.spam_train_at, settings.rspamd_options().bayes_min_learns) == ("03:30", 20)
    assert server(MAILSTACK_SPAM_TRAIN_AT="").spam_train_at is None  # never
    assert server(MAILSTACK_SPAM_TRAIN_AT="4:05").spam_train_at == "04:05"
    assert server_problems(MAILSTACK_SPAM_TRAIN_AT="25:00") == [
        Problem(
            "MAILSTACK_SPAM_TRAIN_AT", "must be a time of day as HH:MM, e.g. 03:30 (got '25:00')"
        )
    ]
    assert server_problems(MAILSTACK_SPAM_BAYES_MIN_LEARNS="0") == [
        Problem("MAILSTACK_SPAM_BAYES_MIN_LEARNS", "must be 1 or more")
    ]
