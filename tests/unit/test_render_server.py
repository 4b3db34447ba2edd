"""The server profile's Postfix and Dovecot configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack.errors import ConfigError
from mailstack.paths import Paths
from mailstack.render.dovecot import render_dovecot, spam_sieve_path
from mailstack.render.postfix import render_main_cf
from mailstack.render.server import (
    render_server_master_cf,
    render_server_postfix,
    server_main_cf_parameters,
)
from mailstack.settings.server import load_server_settings
from tests.unit.support import (
    CLOSING,
    MILTER,
    SERVER_ENV,
    ServerLoader,
    content,
    master_services,
    parameter,
)

SOCKETMAP = "socketmap:unix:/srv/mailstack/run/mailstack/lookup/socketmap.sock"
DICT_SOCKET = "/srv/mailstack/run/mailstack/dict/dict.sock"


def main_cf(server: ServerLoader, dkim: bool = True, **env: str) -> list[str]:
    settings = server(**env)
    params = server_main_cf_parameters(settings, Paths(settings.root), dkim_enabled=dkim)
    return render_main_cf(params).splitlines()


def master(
    server: ServerLoader, dkim: bool = True, accepting: bool = True, **env: str
) -> dict[str, list[str]]:
    settings = server(**env)
    text = render_server_master_cf(settings, Paths(settings.root), dkim, accepting=accepting)
    return master_services(text)


def listeners(services: dict[str, list[str]]) -> list[str]:
    """The inet entries of master.cf: what Postfix listens on."""
    return [name for name, entry in services.items() if " inet " in entry[0]]


# -- main.cf ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "table"),
    [
        ("virtual_mailbox_domains", "maildomain"),
        ("virtual_mailbox_maps", "mailbox"),
        ("virtual_alias_maps", "alias"),
        ("smtpd_sender_login_maps", "senderlogin"),
    ],
)
def test_tables_ask_the_lookup_service(server: ServerLoader, name: str, table: str) -> None:
    """Domains, mailboxes, aliases and sender logins are socketmap lookups on the worker."""
    assert parameter(main_cf(server), name) == f"{SOCKETMAP}:{table}"


def test_alias_domains_share_the_mailbox_domain_class(server: ServerLoader) -> None:
    """One table answers for hosted and alias domains: Postfix's resolver asks once."""
    assert parameter(main_cf(server), "virtual_alias_domains") == ""


def test_port_25_refuses_hosted_senders_from_strangers(server: ServerLoader) -> None:
    """On 25 a sender address in a hosted domain is checked against `hostedsender`."""
    assert parameter(main_cf(server), "smtpd_sender_restrictions") == (
        f"reject_non_fqdn_sender, check_sender_access {SOCKETMAP}:hostedsender, permit"
    )


def test_no_relaying_on_port_25(server: ServerLoader) -> None:
    """Port 25: no relaying, no AUTH, unknown recipients refused with 550."""
    lines = main_cf(server)
    relay = parameter(lines, "smtpd_relay_restrictions")
    assert relay == "permit_sasl_authenticated, reject_unauth_destination"
    recipient = parameter(lines, "smtpd_recipient_restrictions")
    assert recipient is not None
    literals = "check_recipient_access pcre:/srv/mailstack/etc/postfix/address_literals"
    assert recipient.startswith(f"reject_non_fqdn_recipient, {literals}, reject_unlisted_recipient")
    assert parameter(lines, "local_recipient_maps") == (
        "texthash:/srv/mailstack/etc/postfix/no_local_recipients"
    )
    assert parameter(lines, "relay_domains") in (None, "")
    assert parameter(lines, "mynetworks") == "127.0.0.0/8 [::1]/128"
    assert parameter(lines, "unknown_virtual_mailbox_reject_code") == "550"
    assert parameter(lines, "smtpd_sasl_auth_enable") == "no"
    assert parameter(lines, "mydestination") == ""


def test_delivery_and_sasl_go_through_dovecot(server: ServerLoader) -> None:
    """Mail is delivered over LMTP and passwords checked over Dovecot's auth socket."""
    lines = main_cf(server)
    dovecot = "/srv/mailstack/run/mailstack/dovecot"
    assert parameter(lines, "virtual_transport") == f"lmtp:unix:{dovecot}/lmtp-postfix"
    assert parameter(lines, "smtpd_sasl_type") == "dovecot"
    assert parameter(lines, "smtpd_sasl_path") == f"{dovecot}/auth-postfix"
    assert parameter(lines, "smtpd_tls_auth_only") == "yes"


@pytest.mark.parametrize(
    ("env", "param", "expected"),
    [
        ({}, "message_size_limit", "52428800"),
        ({"POSTFIX_message_size_limit": "1000000"}, "message_size_limit", "1000000"),
        ({}, "myhostname", "mx.example.com"),
        ({}, "smtpd_tls_cert_file", "/srv/mailstack/etc/mailstack/tls/cert.pem"),
        ({}, "relayhost", None),
        ({"RELAYHOST": "[smtp.example.net]:587"}, "relayhost", "[smtp.example.net]:587"),
        ({"POSTFIX_disable_vrfy_command": ""}, "disable_vrfy_command", None),
        ({"POSTFIX_smtpd_helo_required": "no"}, "smtpd_helo_required", "no"),
    ],
)
def test_server_main_cf_settings(
    server: ServerLoader, env: dict[str, str], param: str, expected: str | None
) -> None:
    """Server defaults and the variables (POSTFIX_* too) that change them."""
    assert parameter(main_cf(server, **env), param) == expected


def test_own_certificate(server: ServerLoader, tmp_path: Path) -> None:
    """MAILSTACK_TLS_CERT_FILE/KEY_FILE replace the self-signed pair in Postfix and Dovecot."""
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert.write_text("cert")
    key.write_text("key")
    env = {"MAILSTACK_TLS_CERT_FILE": str(cert), "MAILSTACK_TLS_KEY_FILE": str(key)}
    lines = main_cf(server, **env)
    assert parameter(lines, "smtpd_tls_cert_file") == str(cert)
    assert parameter(lines, "smtpd_tls_key_file") == str(key)
    conf = dovecot_conf(server, **env)
    assert conf["ssl_cert"] == f"<{cert}"
    assert conf["ssl_key"] == f"<{key}"


@pytest.mark.parametrize("dkim", [True, False])
def test_main_cf_milter_only_with_dkim(server: ServerLoader, dkim: bool) -> None:
    """Only submitted mail passes the signer: not mail arriving on 25, not mail re-injected
    locally (a Sieve redirect of a forged message must not get our signature); a milter that
    is down defers mail (tempfail), with or without DKIM."""
    lines = main_cf(server, dkim=dkim)
    assert parameter(lines, "non_smtpd_milters") is None
    assert parameter(lines, "milter_default_action") == "tempfail"
    assert parameter(lines, "smtpd_milters") is None


def test_relayhost_password_goes_to_sasl_passwd(server: ServerLoader) -> None:
    """RELAYHOST with a user and password: SMTP AUTH on, the password only in sasl_passwd."""
    settings = server(
        RELAYHOST="[smtp.example.net]:587", RELAYHOST_USERNAME="mx", RELAYHOST_PASSWORD="pw"
    )
    files = render_server_postfix(settings, Paths(settings.root), True)
    lines = content(files, "main.cf").splitlines()
    assert parameter(lines, "smtp_sasl_auth_enable") == "yes"
    assert "pw" not in content(files, "main.cf")
    assert content(files, "sasl_passwd") == "[smtp.example.net]:587\tmx:pw\n"


# -- master.cf ----------------------------------------------------------------------------


def test_master_cf_default_listeners(server: ServerLoader) -> None:
    """25 is postscreen in front of smtpd; 587 and 465 are smtpd; LMTP client present."""
    services = master(server)
    assert listeners(services) == ["0.0.0.0:25", "0.0.0.0:587", "0.0.0.0:465"]
    assert services["0.0.0.0:25"] == ["0.0.0.0:25 inet n - n - 1 postscreen"]
    assert services["smtpd"][0] == "smtpd pass - - n - - smtpd"
    assert {"dnsblog", "tlsproxy", "lmtp"} <= services.keys()


def test_mx_smtpd_asks_rspamd_and_waits_while_it_cannot(server: ServerLoader) -> None:
    """MAILSTACK_SPAM (on by default): the smtpd behind postscreen has rspamd's milter; the
    main.cf default action (tempfail) holds unless MAILSTACK_SPAM_FAILURE=accept."""
    settings = server()
    milter = f"unix:{settings.root}/run/mailstack/rspamd-milter/milter.sock"
    assert master(server)["smtpd"][1:] == [f"-o smtpd_milters={milter}"]
    assert master(server, MAILSTACK_SPAM_FAILURE="accept")["smtpd"][1:] == [
        f"-o smtpd_milters={milter}",
        "-o milter_default_action=accept",
    ]
    assert master(server, MAILSTACK_SPAM="off")["smtpd"] == ["smtpd pass - - n - - smtpd"]
    # submission keeps its own milters (sender check, OpenDKIM), never rspamd
    assert not any("rspamd" in line for line in master(server)["0.0.0.0:587"])


@pytest.mark.parametrize(
    ("variable", "gone"),
    [
        ("MAILSTACK_LISTEN_SMTP", "0.0.0.0:25"),
        ("MAILSTACK_LISTEN_SUBMISSION", "0.0.0.0:587"),
        ("MAILSTACK_LISTEN_SUBMISSIONS", "0.0.0.0:465"),
    ],
)
def test_empty_listen_variable_disables_that_listener(
    server: ServerLoader, variable: str, gone: str
) -> None:
    """An empty MAILSTACK_LISTEN_* removes exactly that listener from master.cf."""
    services = master(server, **{variable: ""})
    expected = [name for name in ["0.0.0.0:25", "0.0.0.0:587", "0.0.0.0:465"] if name != gone]
    assert listeners(services) == expected
    if gone.endswith(":25"):
        assert "smtpd" not in services, "no postscreen, so no smtpd pass service either"


def test_listen_addresses_are_used_as_given(server: ServerLoader) -> None:
    """MAILSTACK_LISTEN_* with an address and port ([ipv6] too) are the master.cf entries."""
    services = master(
        server,
        MAILSTACK_LISTEN_SMTP="127.0.0.1:2525",
        MAILSTACK_LISTEN_SUBMISSION="[::1]:2587",
        MAILSTACK_LISTEN_SUBMISSIONS="192.0.2.1:2465",
    )
    assert listeners(services) == ["127.0.0.1:2525", "[::1]:2587", "192.0.2.1:2465"]


SUBMISSION_POLICY = [
    "-o smtpd_sasl_auth_enable=yes",
    "-o smtpd_tls_auth_only=yes",
    "-o smtpd_client_restrictions=permit_sasl_authenticated,reject",
    "-o smtpd_sender_restrictions=reject_non_fqdn_sender,reject_sender_login_mismatch",
    "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject",
]


@pytest.mark.parametrize(
    ("listener", "name"), [("0.0.0.0:587", "submission"), ("0.0.0.0:465", "submissions")]
)
def test_submission_options(server: ServerLoader, listener: str, name: str) -> None:
    """587/465: TLS, SASL, logged-in users with their own addresses; 465 wraps TLS."""
    entry = master(server)[listener]
    assert entry[0] == f"{listener} inet n - n - - smtpd"
    assert f"-o syslog_name=postfix/{name}" in entry
    assert "-o smtpd_tls_security_level=encrypt" in entry
    for option in SUBMISSION_POLICY:
        assert option in entry
    assert ("-o smtpd_tls_wrappermode=yes" in entry) == (name == "submissions")


@pytest.mark.parametrize("dkim", [True, False])
def test_submission_milter_only_with_dkim(server: ServerLoader, dkim: bool) -> None:
    """Users' mail always passes the sender check first, then OpenDKIM when there are keys
    to sign with."""
    services = master(server, dkim=dkim)
    sender = "unix:/srv/mailstack/run/mailstack/milter/sender.sock"
    expected = f"-o smtpd_milters={sender},{MILTER}" if dkim else f"-o smtpd_milters={sender}"
    for listener in ("0.0.0.0:587", "0.0.0.0:465"):
        assert expected in services[listener]
        assert "-o milter_macro_daemon_name=ORIGINATING" in services[listener]


def test_master_cf_closing(server: ServerLoader) -> None:
    """Graceful stop: 25 skips postscreen and every listener ends with the 421 option."""
    services = master(server, accepting=False)
    assert listeners(services) == ["0.0.0.0:25", "0.0.0.0:587", "0.0.0.0:465"]
    assert services["0.0.0.0:25"][0] == "0.0.0.0:25 inet n - n - - smtpd"
    assert "smtpd" not in services
    for listener in listeners(services):
        assert services[listener][-2:] == ["-o smtpd_delay_reject=no", CLOSING]


# -- dovecot.conf -------------------------------------------------------------------------

Section = dict[str, "str | Section"]


def parse_dovecot(text: str) -> Section:
    """dovecot.conf as nested sections (`service imap-login` -> {...}); a key or section
    given twice in one place fails the test, but passdb (Dovecot asks them in order: the
    second is `passdb 2`)."""
    root: Section = {}
    stack = [root]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "}":
            stack.pop()
            continue
        if line.endswith("{"):
            name = " ".join(line[:-1].split())
            if name == "passdb" and name in stack[-1]:
                name = "passdb 2"
            assert name not in stack[-1], f"section {name} twice"
            section: Section = {}
            stack[-1][name] = section
            stack.append(section)
            continue
        key, _, value = line.partition("=")
        assert key.strip() not in stack[-1], f"{key.strip()} twice"
        stack[-1][key.strip()] = value.strip()
    assert len(stack) == 1, "unbalanced braces"
    return root


def dovecot_conf(server: ServerLoader, **env: str) -> Section:
    settings = server(**env)
    return parse_dovecot(content(render_dovecot(settings, Paths(settings.root)), "dovecot.conf"))


def test_dovecot_imap_listeners(server: ServerLoader) -> None:
    """IMAP on 143 and 993 (ssl) everywhere; POP3 closed; no Dovecot ManageSieve."""
    conf = dovecot_conf(server)
    login = conf["service imap-login"]
    assert login["inet_listener imap"] == {"address": "*", "port": "143"}
    assert login["inet_listener imaps"] == {"address": "*", "port": "993", "ssl": "yes"}
    pop3 = conf["service pop3-login"]
    assert pop3["inet_listener pop3"] == {"port": "0"}
    assert pop3["inet_listener pop3s"] == {"port": "0"}
    assert conf["protocols"] == "imap lmtp"


@pytest.mark.parametrize(
    ("env", "imap", "imaps"),
    [
        (
            {"MAILSTACK_LISTEN_IMAP": ""},
            {"port": "0"},
            {"address": "*", "port": "993", "ssl": "yes"},
        ),
        ({"MAILSTACK_LISTEN_IMAPS": ""}, {"address": "*", "port": "143"}, {"port": "0"}),
        (
            {"MAILSTACK_LISTEN_IMAP": "127.0.0.1:2143", "MAILSTACK_LISTEN_IMAPS": "[::]:2993"},
            {"address": "127.0.0.1", "port": "2143"},
            {"address": "[::]", "port": "2993", "ssl": "yes"},
        ),
    ],
)
def test_dovecot_listen_variables(
    server: ServerLoader, env: dict[str, str], imap: Section, imaps: Section
) -> None:
    """MAILSTACK_LISTEN_IMAP/IMAPS move a listener; empty closes it (port 0)."""
    login = dovecot_conf(server, **env)["service imap-login"]
    assert login["inet_listener imap"] == imap
    assert login["inet_listener imaps"] == imaps


def test_dovecot_tls_and_authentication(server: ServerLoader) -> None:
    """The self-signed pair by default; no plain-text login outside TLS."""
    conf = dovecot_conf(server)
    assert conf["ssl"] == "yes"
    assert conf["ssl_cert"] == "</srv/mailstack/etc/mailstack/tls/cert.pem"
    assert conf["ssl_key"] == "</srv/mailstack/etc/mailstack/tls/key.pem"
    assert conf["disable_plaintext_auth"] == "yes"


def test_dovecot_users_come_from_the_dict_socket(server: ServerLoader) -> None:
    """passdb, userdb and Sieve scripts are read through the lookup service's dict socket."""
    settings = server()
    files = render_dovecot(settings, Paths(settings.root))
    conf = parse_dovecot(content(files, "dovecot.conf"))
    auth_file = "/srv/mailstack/etc/mailstack/dovecot-dict-auth.conf.ext"
    assert conf["passdb"] == {"driver": "dict", "args": auth_file}
    assert conf["userdb"] == {"driver": "dict", "args": auth_file}
    auth = parse_dovecot(content(files, "dovecot-dict-auth.conf.ext"))
    # kept open between lookups (Dovecot's default hangs up after each one)
    assert auth["uri"] == f"proxy:idle_msecs=600000:{DICT_SOCKET}:mailstack"
    assert auth["password_key"] == "passdb/%u"
    # app passwords: the user and the password's 8-character ident name the one hash
    app_file = "/srv/mailstack/etc/mailstack/dovecot-dict-apppass.conf.ext"
    assert conf["passdb 2"] == {"driver": "dict", "args": app_file}
    app = parse_dovecot(content(files, "dovecot-dict-apppass.conf.ext"))
    assert app["uri"] == auth["uri"]
    assert app["password_key"] == "apppass/%u/%0.8w"
    assert app["default_pass_scheme"] == "ARGON2ID"
    plugin = conf["plugin"]
    assert isinstance(plugin, dict)
    # sieve scripts from their own socket: the mail processes never reach password hashes
    sieve_socket = "/srv/mailstack/run/mailstack/sieve-dict/dict.sock"
    assert plugin["sieve"] == f"dict:proxy:{sieve_socket}:sieve;name=active"


def test_dovecot_mail_storage_and_postfix_sockets(server: ServerLoader) -> None:
    """Maildirs owned by the mail user; auth and LMTP sockets only for postfix."""
    conf = dovecot_conf(server)
    assert conf["mail_home"] == "/srv/mailstack/var/lib/mailstack/mail/%d/%n"
    assert conf["mail_uid"] == conf["mail_gid"] == "vmail"
    postfix_only = {"user": "postfix", "group": "postfix", "mode": "0600"}
    assert conf["service lmtp"] == {"unix_listener lmtp-postfix": postfix_only}
    auth = conf["service auth"]
    assert isinstance(auth, dict)
    assert auth["unix_listener auth-postfix"] == postfix_only
    assert "extra_groups" not in auth  # auth needs no mail-user group: its dict is its own
    assert conf["protocol lmtp"] == {
        "mail_plugins": "$mail_plugins sieve",
        "postmaster_address": "postmaster@mx.example.com",
    }


# -- the mail user --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "message"),
    [("root", "must not be root"), ("mailstack-no-such-user", "no system user")],
)
def test_mail_user_must_be_a_system_user_other_than_root(user: str, message: str) -> None:
    """MAILSTACK_MAIL_USER must name an existing, unprivileged account."""
    with pytest.raises(ConfigError) as refused:
        load_server_settings({**SERVER_ENV, "MAILSTACK_MAIL_USER": user})
    (problem,) = refused.value.problems
    assert problem.variable == "MAILSTACK_MAIL_USER"
    assert message in problem.message


def test_greylisting_on_25_only_for_clients_outside_mynetworks(server: ServerLoader) -> None:
    """Greylisting (on by default) comes after the recipient checks and permit_mynetworks;
    if the worker is not there, Postfix lets mail through (DUNNO); off: no policy check."""
    socket = "unix:/srv/mailstack/run/mailstack/policy/greylist.sock"
    recipient = parameter(main_cf(server), "smtpd_recipient_restrictions")
    assert recipient is not None
    assert recipient.endswith(
        f"permit_mynetworks, check_policy_service {{ {socket}, default_action=DUNNO }}"
    )
    off = parameter(main_cf(server, MAILSTACK_GREYLIST="0"), "smtpd_recipient_restrictions")
    assert off is not None
    assert "check_policy_service" not in off


def test_spam_is_filed_by_a_global_sieve_step_only_with_spam_filtering(
    server: ServerLoader,
) -> None:
    """The Sieve step runs before the user's script; it is not there when rspamd is off (a
    sender's own X-Spam header then means nothing)."""
    settings = server()
    files = {f.path.name: f.content for f in render_dovecot(settings, Paths(settings.root))}
    script = spam_sieve_path(Paths(settings.root))
    assert f"  sieve_before = {script}\n" in files["dovecot.conf"]
    assert 'if header :is "X-Spam" "Yes"' in files["spam.sieve"]
    assert 'fileinto :create "Junk"' in files["spam.sieve"]
    assert "mailbox Junk {\n    special_use = \\Junk\n    auto = subscribe" in files["dovecot.conf"]

    settings = server(MAILSTACK_SPAM="off")
    files = {f.path.name: f.content for f in render_dovecot(settings, Paths(settings.root))}
    assert "sieve_before" not in files["dovecot.conf"]
    assert "spam.sieve" not in files
