"""The relay's configuration files, from the variables in the README's Settings table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailstack.paths import Paths
from mailstack.render.opendkim import render_opendkim
from mailstack.render.postfix import render_master_cf, render_postfix
from mailstack.runtime.prepare import signing_keys
from tests.unit.support import (
    CLOSING,
    MILTER,
    RELAY_AUTH,
    MainCf,
    ProblemsOf,
    RelayLoader,
    content,
    master_services,
    parameter,
)

SENDERS_TABLE = "texthash:/srv/mailstack/etc/postfix/allowed_senders"
DEFAULT_NETWORKS = "127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16"


# -- main.cf ------------------------------------------------------------------------------


def test_allowed_sender_domains_gate_mail_on_the_sender_table(
    relay: RelayLoader, relay_main_cf: MainCf
) -> None:
    """ALLOWED_SENDER_DOMAINS: recipients are accepted only after the allowed_senders check."""
    lines = relay_main_cf(ALLOWED_SENDER_DOMAINS="example.com Example.ORG")
    assert parameter(lines, "smtpd_recipient_restrictions") == (
        "reject_non_fqdn_recipient, reject_unknown_recipient_domain, "
        f"check_sender_access {SENDERS_TABLE}, reject"
    )
    settings = relay(ALLOWED_SENDER_DOMAINS="example.com Example.ORG")
    table = content(render_postfix(settings, Paths(settings.root), False), "allowed_senders")
    assert [line for line in table.splitlines() if not line.startswith("#")] == [
        "example.com\tOK",
        "example.org\tOK",
    ]


def test_allow_empty_sender_domains_trusts_mynetworks_instead(relay_main_cf: MainCf) -> None:
    """ALLOW_EMPTY_SENDER_DOMAINS: no sender table; only mynetworks (or SASL) may relay."""
    lines = relay_main_cf(ALLOWED_SENDER_DOMAINS="", ALLOW_EMPTY_SENDER_DOMAINS="yes")
    assert parameter(lines, "smtpd_recipient_restrictions") is None
    assert parameter(lines, "smtpd_relay_restrictions") == (
        "permit_mynetworks, permit_sasl_authenticated, reject"
    )


@pytest.mark.parametrize(
    "relayhost",
    [
        "smtp.example.com",
        "smtp.example.com:2525",
        "[smtp.example.com]",
        "[smtp.example.com]:587",
        "[192.0.2.25]:587",
        "[2001:db8::25]:587",
    ],
)
def test_relayhost_forms_reach_main_cf_as_written(relay_main_cf: MainCf, relayhost: str) -> None:
    """Every RELAYHOST form in the README becomes `relayhost = <the same text>`."""
    assert parameter(relay_main_cf(RELAYHOST=relayhost), "relayhost") == relayhost


def test_without_relayhost_mail_goes_direct(relay_main_cf: MainCf) -> None:
    """No RELAYHOST: no relayhost line, so Postfix looks up the recipients' MX."""
    assert parameter(relay_main_cf(), "relayhost") is None


def test_with_relayhost_recipient_domains_are_not_dns_checked(relay_main_cf: MainCf) -> None:
    """With RELAYHOST the relay host judges recipients: no reject_unknown_recipient_domain."""
    lines = relay_main_cf(RELAYHOST="[smtp.example.com]:587")
    restrictions = parameter(lines, "smtpd_recipient_restrictions")
    assert restrictions == f"reject_non_fqdn_recipient, check_sender_access {SENDERS_TABLE}, reject"


@pytest.mark.parametrize("relayhost", ["2001:db8::25", "2001:db8::25:587", "[smtp.example.com"])
def test_malformed_relayhost_is_refused(relay_problems: ProblemsOf, relayhost: str) -> None:
    """An IPv6 relay host without brackets (or a broken bracket) is an error naming RELAYHOST."""
    problems = relay_problems(RELAYHOST=relayhost)
    assert [p.variable for p in problems] == ["RELAYHOST"]
    assert "[ipv6]:port" in problems[0].message


@pytest.mark.parametrize(
    ("networks", "expected"),
    [
        (None, DEFAULT_NETWORKS),
        ("192.0.2.0/24 [2001:db8::]/32", "192.0.2.0/24, [2001:db8::]/32"),
        ("10.1.0.0/16,cidr:/etc/postfix/clients", "10.1.0.0/16, cidr:/etc/postfix/clients"),
    ],
)
def test_mynetworks_default_and_override(
    relay_main_cf: MainCf, networks: str | None, expected: str
) -> None:
    """mynetworks is the README's private ranges unless POSTFIX_mynetworks lists others."""
    env = {} if networks is None else {"POSTFIX_mynetworks": networks}
    assert parameter(relay_main_cf(**env), "mynetworks") == expected


@pytest.mark.parametrize(("limit", "expected"), [(None, "0"), ("10240000", "10240000")])
def test_message_size_limit(relay_main_cf: MainCf, limit: str | None, expected: str) -> None:
    """message_size_limit is 0 (unlimited) unless POSTFIX_message_size_limit says otherwise."""
    env = {} if limit is None else {"POSTFIX_message_size_limit": limit}
    assert parameter(relay_main_cf(**env), "message_size_limit") == expected


def test_message_size_limit_must_be_bytes(relay_problems: ProblemsOf) -> None:
    """A size with a unit (10M) is refused, naming the variable."""
    (problem,) = relay_problems(POSTFIX_message_size_limit="10M")
    assert problem.variable == "POSTFIX_message_size_limit"
    assert "whole number of bytes" in problem.message


def test_masqueraded_domains(relay_main_cf: MainCf) -> None:
    """MASQUERADED_DOMAINS: masquerade_domains lists them, for headers of every client too."""
    lines = relay_main_cf(MASQUERADED_DOMAINS="example.com  example.org")
    assert parameter(lines, "masquerade_domains") == "example.com example.org"
    assert parameter(lines, "local_header_rewrite_clients") == "static:all"
    plain = relay_main_cf()
    assert parameter(plain, "masquerade_domains") is None
    assert parameter(plain, "local_header_rewrite_clients") is None


@pytest.mark.parametrize("value", [None, "0", "off"])
def test_smtp_header_checks_off(relay_main_cf: MainCf, value: str | None) -> None:
    """SMTP_HEADER_CHECKS unset or off: no smtp_header_checks line."""
    env = {} if value is None else {"SMTP_HEADER_CHECKS": value}
    assert parameter(relay_main_cf(**env), "smtp_header_checks") is None


def test_smtp_header_checks_1_uses_the_bundled_rules(relay_main_cf: MainCf) -> None:
    """SMTP_HEADER_CHECKS=1 points at the bundled table in the Postfix configuration folder."""
    lines = relay_main_cf(SMTP_HEADER_CHECKS="1")
    expected = "regexp:/srv/mailstack/etc/postfix/smtp_header_checks"
    assert parameter(lines, "smtp_header_checks") == expected


def test_the_bundled_header_rules_strip_what_the_readme_lists(
    relay: RelayLoader, paths: Paths
) -> None:
    """The bundled table drops the README's five headers only, and never overwrites."""
    files = render_postfix(relay(), paths, False)
    (table,) = [f for f in files if f.path.name == "smtp_header_checks"]
    assert table.keep_existing
    rules = [
        re.compile(line.split()[0].strip("/"), re.IGNORECASE)
        for line in table.content.splitlines()
        if line.startswith("/") and line.split()[-1] == "IGNORE"
    ]
    for header in ("Received", "X-Originating-IP", "X-Mailer", "X-PHP-Originating-Script"):
        assert any(rule.search(f"{header}: x") for rule in rules), header
    assert any(rule.search("user-agent: x") for rule in rules), "Postfix matches any case"
    for kept in ("Subject: hi", "From: a@example.com", "X-Received-Note: x"):
        assert not any(rule.search(kept) for rule in rules), kept


def test_smtp_header_checks_own_table(relay_main_cf: MainCf, tmp_path: Path) -> None:
    """SMTP_HEADER_CHECKS=type:/path uses the user's table as given."""
    table = tmp_path / "header_checks"
    table.write_text("/^X-Internal:/ IGNORE\n")
    lines = relay_main_cf(SMTP_HEADER_CHECKS=f"pcre:{table}")
    assert parameter(lines, "smtp_header_checks") == f"pcre:{table}"


def test_smtp_header_checks_missing_table_is_an_error(
    relay_problems: ProblemsOf, tmp_path: Path
) -> None:
    """A type:/path whose file does not exist is refused, naming the file."""
    missing = tmp_path / "nope"
    (problem,) = relay_problems(SMTP_HEADER_CHECKS=f"regexp:{missing}")
    assert problem.variable == "SMTP_HEADER_CHECKS"
    assert str(missing) in problem.message


def test_inbound_debugging_debugs_mynetworks(relay_main_cf: MainCf) -> None:
    """INBOUND_DEBUGGING: debug_peer_list is mynetworks (the effective one); off: no line."""
    assert parameter(relay_main_cf(INBOUND_DEBUGGING="1"), "debug_peer_list") == DEFAULT_NETWORKS
    lines = relay_main_cf(INBOUND_DEBUGGING="true", POSTFIX_mynetworks="192.0.2.0/24")
    assert parameter(lines, "debug_peer_list") == "192.0.2.0/24"
    assert parameter(relay_main_cf(INBOUND_DEBUGGING="false"), "debug_peer_list") is None


XOAUTH2 = {**RELAY_AUTH, "XOAUTH2_CLIENT_ID": "client", "XOAUTH2_SECRET": "secret"}


def test_xoauth2_sends_through_the_local_hop(relay: RelayLoader, relay_main_cf: MainCf) -> None:
    """XOAUTH2 on: Postfix relays to mailstack's loopback hop, which does TLS and XOAUTH2
    upstream; Postfix logs in to the hop with the password of this start, never with
    RELAYHOST_PASSWORD."""
    lines = relay_main_cf(**XOAUTH2)
    assert parameter(lines, "relayhost") == "[127.0.0.1]:10587"
    assert parameter(lines, "smtp_tls_security_level") == "none"
    assert parameter(lines, "smtp_sasl_auth_enable") == "yes"
    assert parameter(lines, "smtp_sasl_mechanism_filter") == "plain"
    settings = relay(**XOAUTH2, RELAYHOST_PASSWORD="unused")
    files = render_postfix(settings, Paths(settings.root), False, hop_password="per-start")
    assert content(files, "sasl_passwd") == "[127.0.0.1]:10587\tpostfix:per-start\n"
    moved = relay_main_cf(**XOAUTH2, MAILSTACK_XOAUTH2_PORT="11025")
    assert parameter(moved, "relayhost") == "[127.0.0.1]:11025"


def test_password_auth_without_xoauth2(relay: RelayLoader, relay_main_cf: MainCf) -> None:
    """Without XOAUTH2, RELAYHOST_USERNAME/PASSWORD go to sasl_passwd (0600), keyed by RELAYHOST."""
    lines = relay_main_cf(**RELAY_AUTH, RELAYHOST_PASSWORD="pw")
    assert parameter(lines, "relayhost") == "[smtp.example.com]:587"
    assert parameter(lines, "smtp_sasl_auth_enable") == "yes"
    settings = relay(**RELAY_AUTH, RELAYHOST_PASSWORD="pw", SASL_RELAYHOST="smtp.example.com")
    (passwd,) = [
        f
        for f in render_postfix(settings, Paths(settings.root), False)
        if f.path.name == "sasl_passwd"
    ]
    assert passwd.content == "smtp.example.com\tuser:pw\n"
    assert passwd.mode == 0o600


@pytest.mark.parametrize("dkim", [True, False])
def test_milter_only_with_dkim(relay_main_cf: MainCf, dkim: bool) -> None:
    """With DKIM keys every message passes OpenDKIM and waits (tempfail) if it is down."""
    lines = relay_main_cf(dkim=dkim)
    expected = MILTER if dkim else None
    assert parameter(lines, "smtpd_milters") == expected
    assert parameter(lines, "non_smtpd_milters") == expected
    assert parameter(lines, "milter_default_action") == ("tempfail" if dkim else None)


@pytest.mark.parametrize(
    ("env", "param", "expected"),
    [
        (
            {"RELAYHOST": "[smtp.example.com]:587", "POSTFIX_relayhost": "[backup.example.com]:25"},
            "relayhost",
            "[backup.example.com]:25",
        ),
        (
            {"INBOUND_DEBUGGING": "1", "POSTFIX_debug_peer_list": "192.0.2.7"},
            "debug_peer_list",
            "192.0.2.7",
        ),
        ({"POSTFIX_milter_default_action": "accept"}, "milter_default_action", "accept"),
        ({"POSTFIX_smtpd_milters": ""}, "smtpd_milters", None),
        ({"POSTFIX_smtpd_milters": ""}, "non_smtpd_milters", MILTER),
        ({"POSTFIX_smtpd_banner": "$myhostname ESMTP"}, "smtpd_banner", "$myhostname ESMTP"),
    ],
)
def test_postfix_overrides_win_over_settings(
    relay_main_cf: MainCf, env: dict[str, str], param: str, expected: str | None
) -> None:
    """POSTFIX_<param> beats what other settings produced; empty removes only its line."""
    assert parameter(relay_main_cf(dkim=True, **env), param) == expected


# -- master.cf ----------------------------------------------------------------------------


def test_master_cf_open(relay: RelayLoader) -> None:
    """Both listeners run smtpd under their own syslog name; nobody is turned away."""
    text = render_master_cf(relay())
    services = master_services(text)
    assert services["0.0.0.0:587"] == [
        "0.0.0.0:587 inet n - n - - smtpd",
        "-o syslog_name=postfix/submission",
    ]
    assert services["0.0.0.0:25"] == [
        "0.0.0.0:25 inet n - n - - smtpd",
        "-o syslog_name=postfix/smtpd",
    ]
    assert {"pickup", "cleanup", "qmgr", "smtp", "bounce"} <= services.keys()
    assert "421" not in text


def test_master_cf_listen_variables(relay: RelayLoader) -> None:
    """MAILSTACK_LISTEN_SUBMISSION takes [ipv6]:port; empty MAILSTACK_LISTEN_SMTP drops 25."""
    settings = relay(MAILSTACK_LISTEN_SUBMISSION="[::1]:1587", MAILSTACK_LISTEN_SMTP="")
    services = master_services(render_master_cf(settings))
    listeners = [name for name, entry in services.items() if " inet " in entry[0]]
    assert listeners == ["[::1]:1587"]


def test_master_cf_closing_turns_new_clients_away(relay: RelayLoader) -> None:
    """Graceful stop: every listener answers 421 4.3.2 at once; the other services stay."""
    open_services = master_services(render_master_cf(relay()))
    services = master_services(render_master_cf(relay(), accepting=False))
    assert services.keys() == open_services.keys()
    for listener in ("0.0.0.0:587", "0.0.0.0:25"):
        assert services[listener][-2:] == ["-o smtpd_delay_reject=no", CLOSING]
        assert services[listener][:-2] == open_services[listener]
    assert services["pickup"] == open_services["pickup"]


# -- OpenDKIM -----------------------------------------------------------------------------


def opendkim_files(
    relay: RelayLoader, root: Path, domains: list[str], **env: str
) -> dict[str, str]:
    """The OpenDKIM files rendered for a relay whose key folder holds keys for `domains`."""
    keys_dir = Paths(root).dkim_keys
    keys_dir.mkdir(parents=True)
    for domain in domains:
        (keys_dir / f"{domain}.private").write_text("key\n")
    settings = relay(MAILSTACK_ROOT=str(root), **env)
    paths = Paths(root)
    keys = signing_keys(settings, paths)
    # as the relay's start-up and `mailstack render` call it
    files = render_opendkim(settings, paths, keys, log_why=settings.inbound_debugging)
    return {f.path.name: f.content for f in files}


def rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def opendkim_conf(text: str) -> dict[str, str]:
    """opendkim.conf as key -> value (a key set twice fails the test)."""
    conf: dict[str, str] = {}
    for line in rows(text):
        key, _, value = line.partition(" ")
        assert key not in conf, f"{key} is set twice"
        conf[key] = value.strip()
    return conf


ALL_DOMAINS = "example.com example.org example.net"


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, {"example.com": "mail", "example.org": "mail", "example.net": "mail"}),
        ("postfix", {"example.com": "postfix", "example.org": "postfix", "example.net": "postfix"}),
        (
            "foo,example.org=postfix,example.com=blah",
            {"example.com": "blah", "example.org": "postfix", "example.net": "foo"},
        ),
        ("example.com=blah", {"example.com": "blah", "example.org": "mail", "example.net": "mail"}),
        ("a,example.com=x,b", {"example.com": "x", "example.org": "b", "example.net": "b"}),
    ],
)
def test_dkim_selector_forms(
    relay: RelayLoader, tmp_path: Path, selector: str | None, expected: dict[str, str]
) -> None:
    """Per-domain selectors, else the last bare one, else `mail`, in both tables."""
    env = {"ALLOWED_SENDER_DOMAINS": ALL_DOMAINS}
    if selector is not None:
        env["DKIM_SELECTOR"] = selector
    files = opendkim_files(relay, tmp_path, ["example.com", "example.org", "example.net"], **env)
    keys = tmp_path / "etc/opendkim/keys"
    assert sorted(rows(files["KeyTable"])) == sorted(
        f"{s}._domainkey.{d} {d}:{s}:{keys / d}.private" for d, s in expected.items()
    )
    assert sorted(rows(files["SigningTable"])) == sorted(
        f"*@{d} {s}._domainkey.{d}" for d, s in expected.items()
    )


def test_only_allowed_domains_with_a_key_are_signed(relay: RelayLoader, tmp_path: Path) -> None:
    """Only allowed domains that have a key are signed; stray keys are unused."""
    files = opendkim_files(
        relay, tmp_path, ["example.com", "stray.example"], ALLOWED_SENDER_DOMAINS=ALL_DOMAINS
    )
    assert rows(files["SigningTable"]) == ["*@example.com mail._domainkey.example.com"]


def test_allow_empty_sender_domains_signs_every_key(relay: RelayLoader, tmp_path: Path) -> None:
    """ALLOW_EMPTY_SENDER_DOMAINS: every key in the folder signs for its domain."""
    files = opendkim_files(
        relay,
        tmp_path,
        ["example.com", "other.example"],
        ALLOWED_SENDER_DOMAINS="",
        ALLOW_EMPTY_SENDER_DOMAINS="1",
    )
    assert sorted(rows(files["SigningTable"])) == [
        "*@example.com mail._domainkey.example.com",
        "*@other.example mail._domainkey.other.example",
    ]


@pytest.mark.parametrize("subdomains", [True, False])
def test_dkim_sign_subdomains(relay: RelayLoader, tmp_path: Path, subdomains: bool) -> None:
    """DKIM_SIGN_SUBDOMAINS adds `*@*.domain` with the parent's key; off, only `*@domain`."""
    files = opendkim_files(
        relay, tmp_path, ["example.com"], DKIM_SIGN_SUBDOMAINS="yes" if subdomains else "no"
    )
    expected = ["*@example.com mail._domainkey.example.com"]
    if subdomains:
        expected.append("*@*.example.com mail._domainkey.example.com")
    assert rows(files["SigningTable"]) == expected


def test_opendkim_conf_essentials(relay: RelayLoader, tmp_path: Path) -> None:
    """opendkim.conf: milter socket Postfix uses, sign and verify, the generated tables."""
    conf = opendkim_conf(opendkim_files(relay, tmp_path, ["example.com"])["opendkim.conf"])
    etc = tmp_path / "etc/opendkim"
    assert conf["Socket"] == f"local:{tmp_path}/run/mailstack/opendkim/opendkim.sock"
    assert conf["Mode"] == "sv"
    assert conf["KeyTable"] == f"file:{etc}/KeyTable"
    assert conf["SigningTable"] == f"refile:{etc}/SigningTable"
    assert conf["LogWhy"] == "no"


def test_inbound_debugging_makes_opendkim_log_why(relay: RelayLoader, tmp_path: Path) -> None:
    """INBOUND_DEBUGGING turns on OpenDKIM's LogWhy."""
    files = opendkim_files(relay, tmp_path, ["example.com"], INBOUND_DEBUGGING="on")
    assert opendkim_conf(files["opendkim.conf"])["LogWhy"] == "yes"


def test_opendkim_overrides_applied_last(relay: RelayLoader, tmp_path: Path) -> None:
    """OPENDKIM_<Key> replaces mailstack's value, adds new keys, and an empty one removes."""
    files = opendkim_files(
        relay,
        tmp_path,
        ["example.com"],
        OPENDKIM_Canonicalization="relaxed/relaxed",
        OPENDKIM_MinimumKeyBits="1024",
        OPENDKIM_RequireSafeKeys="",
        INBOUND_DEBUGGING="1",
        OPENDKIM_LogWhy="no",
    )
    conf = opendkim_conf(files["opendkim.conf"])
    assert conf["Canonicalization"] == "relaxed/relaxed"
    assert conf["MinimumKeyBits"] == "1024"
    assert "RequireSafeKeys" not in conf
    assert conf["LogWhy"] == "no"
    assert conf["Mode"] == "sv", "keys not overridden keep mailstack's value"
