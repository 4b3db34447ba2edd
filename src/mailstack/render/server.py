"""Postfix configuration for the server profile: MX, submission, virtual mailboxes over LMTP.

Every question about domains, mailboxes, aliases and sender ownership goes to mailstack's
lookup service over socketmap, so changes in the datastore apply at the next lookup. When the
store cannot answer, the lookup says TEMP and Postfix replies 4xx: mail is deferred by the
sender, never bounced.

The listeners (master.cf):
- smtp (25): postscreen in front of smtpd; mail only for hosted recipients, never relaying,
  and never with an envelope sender in a hosted domain (550 5.7.1: users log in on 587/465).
- submission (587): STARTTLS required before AUTH; SASL through Dovecot.
- submissions (465): implicit TLS; otherwise as 587.
Authenticated users may use only the sender addresses the store gives them (their own address
and the aliases that deliver to them), in the envelope (Postfix) and in the header From (the
worker's sender milter); then their mail passes the OpenDKIM milter and is signed.
"""

from __future__ import annotations

from importlib import resources

from mailstack.paths import Paths
from mailstack.render.files import GENERATED_HEADER, RenderedFile
from mailstack.render.postfix import (
    CA_BUNDLE,
    CLOSING_OPTIONS,
    apply_overrides,
    outbound_tls_parameters,
    relay_auth_parameters,
    render_main_cf,
    render_sasl_passwd,
)
from mailstack.render.rspamd import spam_paths
from mailstack.settings.server import ServerSettings
from mailstack.settings.values import HostPort

#: user@[address] names no hosted domain; Postfix would treat our own addresses as local
#: (and always accept postmaster there), so such recipients are refused outright.
ADDRESS_LITERALS = (
    GENERATED_HEADER + "/@\\[.*\\]$/ 550 5.1.1 Address literals are not accepted here\n"
)


def socketmap(paths: Paths, table: str) -> str:
    return f"socketmap:unix:{paths.lookup_socket}:{table}"


def mx_recipient_restrictions(settings: ServerSettings, paths: Paths) -> str:
    """Port 25's recipient checks (submission sets its own): unknown recipients and address
    literals refused first, then greylisting for clients outside mynetworks. If the worker
    is not there at all, Postfix lets the mail through (greylisting is not worth losing or
    delaying mail for: default_action=DUNNO)."""
    checks = [
        "reject_non_fqdn_recipient",
        f"check_recipient_access pcre:{paths.postfix_config / 'address_literals'}",
        "reject_unlisted_recipient",
    ]
    if settings.greylist:
        checks += [
            "permit_mynetworks",
            f"check_policy_service {{ unix:{paths.greylist_socket}, default_action=DUNNO }}",
        ]
    return ", ".join(checks)


def tls_files(settings: ServerSettings, paths: Paths) -> tuple[str, str]:
    """(certificate, key): the user's files, ACME's live pair (self-signed until the first
    certificate is issued), or the self-signed pair made on first start."""
    if settings.tls_cert_file and settings.tls_key_file:
        return str(settings.tls_cert_file), str(settings.tls_key_file)
    if settings.acme_email:
        return str(paths.acme / "live/fullchain.pem"), str(paths.acme / "live/key.pem")
    return str(paths.tls / "cert.pem"), str(paths.tls / "key.pem")


def server_main_cf_parameters(
    settings: ServerSettings, paths: Paths, dkim_enabled: bool
) -> dict[str, str]:
    """Every main.cf parameter of the server, in file order, after POSTFIX_* overrides."""
    cert, key = tls_files(settings, paths)
    params: dict[str, str] = {
        "compatibility_level": "3.6",
        "queue_directory": str(paths.postfix_queue),
        "data_directory": str(paths.postfix_data),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": settings.myhostname,
        "myorigin": "$myhostname",
        # every hosted domain is virtual: nothing is delivered to system accounts
        "mydestination": "",
        # Postfix still counts user@[one of our addresses] as local: with an empty table
        # here every name there would be accepted (and queued for ever). An empty file
        # refuses them all at RCPT.
        "local_recipient_maps": f"texthash:{paths.postfix_config / 'no_local_recipients'}",
        "alias_maps": "",
        "alias_database": "",
        # loopback only; used by postscreen's allow list, never to permit relaying
        "mynetworks": "127.0.0.0/8 [::1]/128",
        "biff": "no",
        "append_dot_mydomain": "no",
        # Dovecot 2.3's LMTP cannot take SMTPUTF8 mail: refuse it at SMTP time rather than
        # accept it and bounce it later to whatever sender the client claimed
        "smtputf8_enable": "no",
        "message_size_limit": str(settings.message_size_limit),
        "mailbox_size_limit": "0",
        "maillog_file": "/dev/stdout",
        "disable_vrfy_command": "yes",
        # SMTP smuggling: a bare LF (not CRLF) from a client outside mynetworks is refused
        "smtpd_forbid_bare_newline": "yes",
        # the datastore, through the lookup service
        # hosted and alias domains are one class: one lookup per address resolved, not two
        # (see mailstack.lookup.maps); the `alias` map rewrites alias-domain addresses
        "virtual_mailbox_domains": socketmap(paths, "maildomain"),
        "virtual_alias_domains": "",
        "virtual_mailbox_maps": socketmap(paths, "mailbox"),
        "virtual_alias_maps": socketmap(paths, "alias"),
        "smtpd_sender_login_maps": socketmap(paths, "senderlogin"),
        "virtual_transport": f"lmtp:unix:{paths.dovecot_run / 'lmtp-postfix'}",
        # SASL: Dovecot checks passwords against the datastore
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": str(paths.dovecot_run / "auth-postfix"),
        "smtpd_sasl_auth_enable": "no",
        "smtpd_sasl_security_options": "noanonymous, noplaintext",
        "smtpd_sasl_tls_security_options": "noanonymous",
        "smtpd_tls_auth_only": "yes",
        "smtpd_tls_cert_file": cert,
        "smtpd_tls_key_file": key,
        "smtpd_tls_security_level": "may",
        "smtpd_tls_protocols": ">=TLSv1.2",
        "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
        "smtpd_tls_loglevel": "1",
        "smtpd_tls_received_header": "yes",
        "smtp_tls_security_level": settings.smtp_tls_security_level,
        "smtp_tls_CAfile": CA_BUNDLE,
        "smtp_tls_loglevel": "1",
        # MX policy: strict envelopes, no relaying, unknown recipients refused at RCPT (550)
        "smtpd_helo_required": "yes",
        "smtpd_delay_reject": "yes",
        "smtpd_helo_restrictions": "reject_invalid_helo_hostname, permit",
        # Port 25 has no SASL, so Postfix would skip a login-mismatch check with only a
        # warning: hosted senders from unauthenticated clients are refused by a lookup.
        "smtpd_sender_restrictions": (
            f"reject_non_fqdn_sender, check_sender_access {socketmap(paths, 'hostedsender')}, "
            "permit"
        ),
        "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
        "smtpd_recipient_restrictions": mx_recipient_restrictions(settings, paths),
        "smtpd_data_restrictions": "reject_unauth_pipelining",
        "unknown_virtual_mailbox_reject_code": "550",
        "unknown_virtual_alias_reject_code": "550",
        # postscreen in front of port 25: pregreeting bots are dropped, loopback skips tests
        "postscreen_access_list": "permit_mynetworks",
        "postscreen_greet_action": "enforce",
        "postscreen_cache_map": f"btree:{paths.postfix_data / 'postscreen_cache'}",
    }
    if settings.relayhost is not None:
        params["relayhost"] = settings.relayhost.text
    if settings.relay_auth is not None:
        # the password only inside TLS, as in the relay (see relay_auth_parameters)
        params.update(relay_auth_parameters(paths))
    params.update(outbound_tls_parameters(settings, paths))
    # never let a user's mail pass unchecked or leave unsigned because a milter is down
    params.update({"milter_protocol": "6", "milter_default_action": "tempfail"})
    # No non_smtpd_milters: mail re-injected locally (a Sieve redirect of someone else's
    # message, a vacation reply) is not signed, or a forged From: in one of our domains,
    # received on 25 and redirected, would leave with our valid signature.
    return apply_overrides(params, settings.postfix_overrides)


def _options(*pairs: str) -> str:
    return "".join(f"    -o {pair}\n" for pair in pairs)


def submission_options(paths: Paths, dkim_enabled: bool, name: str) -> list[str]:
    """smtpd options shared by 587 and 465: authenticated users only, own addresses only."""
    options = [
        f"syslog_name=postfix/{name}",
        "smtpd_sasl_auth_enable=yes",
        "smtpd_tls_auth_only=yes",
        "smtpd_client_restrictions=permit_sasl_authenticated,reject",
        "smtpd_sender_restrictions=reject_non_fqdn_sender,reject_sender_login_mismatch",
        "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
        "smtpd_recipient_restrictions=reject_non_fqdn_recipient",
        "milter_macro_daemon_name=ORIGINATING",
        # at most 10 connections per client address, loopback included, so a few hosts
        # holding idle sessions cannot take every submission process
        "smtpd_client_connection_count_limit=10",
        "smtpd_client_event_limit_exceptions=",
    ]
    # the header From must be the user's own (mailstack.milter) before OpenDKIM signs it
    milters = [f"unix:{paths.sender_milter_socket}"]
    if dkim_enabled:
        milters.append(f"unix:{paths.opendkim_socket}")
    options.append(f"smtpd_milters={','.join(milters)}")
    return options


def mx_milter_options(settings: ServerSettings, paths: Paths) -> list[str]:
    """Port 25's smtpd asks rspamd about every message (MAILSTACK_SPAM). While rspamd
    cannot answer, mail waits with 4xx (MAILSTACK_SPAM_FAILURE=defer, from main.cf) or is
    taken unchecked (accept)."""
    if not settings.spam:
        return []
    options = [f"smtpd_milters=unix:{spam_paths(paths).milter_socket}"]
    if settings.spam_failure == "accept":
        options.append("milter_default_action=accept")
    return options


def render_server_master_cf(
    settings: ServerSettings, paths: Paths, dkim_enabled: bool, accepting: bool = True
) -> str:
    """master.cf; accepting=False turns new clients away with 421 (graceful stop)."""
    closing = "" if accepting else CLOSING_OPTIONS
    services: list[str] = []
    smtp = settings.listen_smtp
    if smtp is not None and accepting:
        services.append(f"{smtp} inet n - n - 1 postscreen\n")
        services.append(
            "smtpd pass - - n - - smtpd\n" + _options(*mx_milter_options(settings, paths))
        )
        services.append("dnsblog unix - - n - 0 dnsblog\n")
        services.append("tlsproxy unix - - n - 0 tlsproxy\n")
    elif smtp is not None:
        services.append(f"{smtp} inet n - n - - smtpd\n" + closing)
    submission = settings.listen_submission
    if submission is not None:
        options = submission_options(paths, dkim_enabled, "submission")
        options.insert(1, "smtpd_tls_security_level=encrypt")
        services.append(f"{submission} inet n - n - - smtpd\n" + _options(*options) + closing)
    submissions = settings.listen_submissions
    if submissions is not None:
        options = submission_options(paths, dkim_enabled, "submissions")
        options[1:1] = ["smtpd_tls_wrappermode=yes", "smtpd_tls_security_level=encrypt"]
        services.append(f"{submissions} inet n - n - - smtpd\n" + _options(*options) + closing)
    services.append("lmtp unix - - n - - lmtp\n")
    template = resources.files("mailstack.render").joinpath("data/master.cf").read_text()
    return GENERATED_HEADER + "".join(services) + template


def render_server_postfix(
    settings: ServerSettings, paths: Paths, dkim_enabled: bool
) -> list[RenderedFile]:
    """All files in the Postfix configuration folder of the server."""
    config = paths.postfix_config
    params = server_main_cf_parameters(settings, paths, dkim_enabled)
    auth = settings.relay_auth
    return [
        RenderedFile(config / "main.cf", render_main_cf(params)),
        RenderedFile(config / "master.cf", render_server_master_cf(settings, paths, dkim_enabled)),
        RenderedFile(config / "sasl_passwd", render_sasl_passwd(*auth) if auth else "", mode=0o600),
        RenderedFile(config / "no_local_recipients", GENERATED_HEADER),
        RenderedFile(config / "address_literals", ADDRESS_LITERALS),
    ]


def listener_addresses(settings: ServerSettings) -> list[HostPort]:
    """The addresses Postfix binds, to check they are free before it starts."""
    found = (settings.listen_smtp, settings.listen_submission, settings.listen_submissions)
    return [address for address in found if address is not None]
