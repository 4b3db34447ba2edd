"""Postfix configuration for the relay: main.cf, master.cf and the lookup tables.

main.cf is built as an ordered mapping of parameter -> value. POSTFIX_<param> overrides are
applied last; an empty override removes the parameter so that Postfix's built-in default
applies (check with `postconf -c DIR -n`). Tables are `texthash:` files: read when a daemon
starts, no postmap step, nothing to go stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources

from mailstack.paths import Paths
from mailstack.render.files import GENERATED_HEADER, RenderedFile
from mailstack.settings.base import ProfileSettings
from mailstack.settings.model import RelaySettings
from mailstack.settings.values import HostPort

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def main_cf_parameters(settings: RelaySettings, paths: Paths, dkim_enabled: bool) -> dict[str, str]:
    """Every main.cf parameter, in file order, after POSTFIX_* overrides."""
    config = paths.postfix_config
    params: dict[str, str] = {
        "compatibility_level": "3.6",
        "queue_directory": str(paths.postfix_queue),
        "data_directory": str(paths.postfix_data),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": settings.myhostname,
        "mydestination": "",
        "relay_domains": "",
        "local_recipient_maps": "",
        "alias_maps": "",
        "alias_database": "",
        "biff": "no",
        "append_dot_mydomain": "no",
        "smtputf8_enable": "yes",
        "header_size_limit": "4096000",
        "message_size_limit": str(settings.message_size_limit),
        "mailbox_size_limit": "0",
        "mynetworks": ", ".join(settings.mynetworks),
        "maillog_file": "/dev/stdout",
        # clients: only mynetworks (or SASL-authenticated clients) may talk to us at all
        "smtpd_delay_reject": "yes",
        "smtpd_helo_required": "yes",
        "smtpd_client_restrictions": "permit_mynetworks, permit_sasl_authenticated, reject",
        "smtpd_helo_restrictions": "permit_mynetworks, reject_invalid_helo_hostname, permit",
        "smtpd_sender_restrictions": "permit_mynetworks, reject",
        "smtpd_relay_restrictions": "permit_mynetworks, permit_sasl_authenticated, reject",
        "smtp_tls_security_level": settings.smtp_tls_security_level,
        "smtp_tls_CAfile": CA_BUNDLE,
        "smtp_tls_loglevel": "1",
    }
    if settings.allowed_sender_domains:
        recipient_checks = ["reject_non_fqdn_recipient"]
        if settings.relayhost is None:
            # Delivering directly: a domain without MX/A can never be reached, fail fast.
            # With a relay host, the relay host judges recipients (and no DNS is needed here).
            recipient_checks.append("reject_unknown_recipient_domain")
        recipient_checks += [
            f"check_sender_access texthash:{config / 'allowed_senders'}",
            "reject",
        ]
        params["smtpd_recipient_restrictions"] = ", ".join(recipient_checks)
        params["smtpd_relay_restrictions"] = "permit"
    if settings.relayhost is not None:
        params["relayhost"] = settings.relayhost.text
    if settings.xoauth2_enabled:
        # Postfix hands mail to mailstack's XOAUTH2 hop on loopback, which authenticates
        # upstream and answers only after the relay host did (see mailstack.xoauth2).
        params["relayhost"] = f"[127.0.0.1]:{settings.xoauth2_hop_port}"
        params["smtp_tls_security_level"] = "none"
        # Postfix logs in to the hop with a password made at each start (sasl_passwd), so
        # no other local process can send through it; loopback, so PLAIN without TLS
        params.update(
            {
                "smtp_sasl_auth_enable": "yes",
                "smtp_sasl_password_maps": f"texthash:{config / 'sasl_passwd'}",
                "smtp_sasl_security_options": "noanonymous",
                "smtp_sasl_mechanism_filter": "plain",
            }
        )
    if settings.relay_auth is not None and not settings.xoauth2_enabled:
        params.update(relay_auth_parameters(paths))
    if not settings.xoauth2_enabled:
        params.update(outbound_tls_parameters(settings, paths))
    if settings.masqueraded_domains:
        params["masquerade_domains"] = " ".join(settings.masqueraded_domains)
        params["local_header_rewrite_clients"] = "static:all"
    if settings.smtp_header_checks:
        params["smtp_header_checks"] = settings.smtp_header_checks
    if settings.inbound_debugging:
        params["debug_peer_list"] = ", ".join(settings.mynetworks)
    if dkim_enabled:
        milter = f"unix:{paths.opendkim_socket}"
        params.update(
            {
                "milter_protocol": "6",
                # Never let mail leave unsigned because the signer is down: defer instead.
                "milter_default_action": "tempfail",
                "smtpd_milters": milter,
                "non_smtpd_milters": milter,
            }
        )
    return apply_overrides(params, settings.postfix_overrides)


def outbound_tls_parameters(settings: ProfileSettings, paths: Paths) -> dict[str, str]:
    """Verification of the receiving MX, where it publishes how (both profiles).

    MTA-STS: Postfix asks the worker's policy map for each destination domain (an `enforce`
    policy answers `secure`, so a certificate that does not match defers the mail). If the
    worker cannot answer, Postfix defers rather than guess. DANE: with a DNSSEC-validating
    resolver, TLSA records are trusted and `dane` is the default level; the map answers
    `dane` for an `enforce` domain whose MX hosts all have validated TLSA records, so DANE
    wins there (RFC 8461 section 2).
    """
    params: dict[str, str] = {}
    if settings.dnssec_resolver is not None:
        params["smtp_dns_support_level"] = "dnssec"
        if settings.smtp_tls_security_level == "may":
            params["smtp_tls_security_level"] = "dane"
    if settings.mta_sts_active:
        params["smtp_tls_policy_maps"] = f"socketmap:unix:{paths.mta_sts_socket}:mta-sts"
    return params


def relay_auth_parameters(paths: Paths) -> dict[str, str]:
    """SMTP AUTH to the relay host with the password in sasl_passwd, never in clear.

    With smtp_tls_security_level=may, anyone between us and the relay host can strip STARTTLS
    from its EHLO reply; PLAIN and LOGIN would then carry the password in clear. So plaintext
    mechanisms are allowed inside TLS only (smtp_sasl_tls_security_options): without TLS
    Postfix does not authenticate and the mail waits in the queue. Overrides are applied
    last, so `POSTFIX_smtp_sasl_security_options=noanonymous` allows them without TLS again.
    """
    return {
        "smtp_sasl_auth_enable": "yes",
        "smtp_sasl_password_maps": f"texthash:{paths.postfix_config / 'sasl_passwd'}",
        "smtp_sasl_security_options": "noplaintext, noanonymous",
        "smtp_sasl_tls_security_options": "noanonymous",
    }


def apply_overrides(
    params: Mapping[str, str], overrides: Mapping[str, str | None]
) -> dict[str, str]:
    """POSTFIX_<param>: a value sets it, None (empty variable) removes it."""
    result = dict(params)
    for key, value in overrides.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def render_main_cf(params: Mapping[str, str]) -> str:
    lines = [GENERATED_HEADER.rstrip("\n")]
    lines += [f"{key} = {value}".rstrip() for key, value in params.items()]
    return "\n".join(lines) + "\n"


#: While stopping, new connections are told to come back later; sessions already running
#: keep their old smtpd process (Postfix applies a reload to new processes only).
CLOSING_OPTIONS = (
    "    -o smtpd_delay_reject=no\n"
    "    -o {smtpd_client_restrictions=check_client_access "
    "static:{421 4.3.2 Service shutting down, try again later}}\n"
)


def _listener(address: HostPort, name: str, accepting: bool) -> str:
    text = f"{address} inet n - n - - smtpd\n    -o syslog_name=postfix/{name}\n"
    return text if accepting else text + CLOSING_OPTIONS


def render_master_cf(settings: RelaySettings, accepting: bool = True) -> str:
    """master.cf; accepting=False turns new SMTP clients away with 421 (graceful stop)."""
    services = [_listener(settings.listen_submission, "submission", accepting)]
    if settings.listen_smtp is not None:
        services.append(_listener(settings.listen_smtp, "smtpd", accepting))
    template = resources.files("mailstack.render").joinpath("data/master.cf").read_text()
    return GENERATED_HEADER + "".join(services) + template


def render_allowed_senders(domains: tuple[str, ...]) -> str:
    """check_sender_access table; `example.com` also admits `app@mail.example.com`, because
    parent_domain_matches_subdomains lists smtpd_access_maps (as in boky/postfix)."""
    return GENERATED_HEADER + "".join(f"{domain}\tOK\n" for domain in domains)


def render_sasl_passwd(key: str, username: str, password: str) -> str:
    return f"{key}\t{username}:{password}\n"


def hop_login(settings: RelaySettings, hop_password: str) -> tuple[str, str, str]:
    """The sasl_passwd entry with which Postfix logs in to the XOAUTH2 hop."""
    return f"[127.0.0.1]:{settings.xoauth2_hop_port}", "postfix", hop_password


def render_postfix(
    settings: RelaySettings,
    paths: Paths,
    dkim_enabled: bool,
    *,
    hop_password: str | None = None,
) -> list[RenderedFile]:
    """All files in the Postfix configuration folder. `hop_password`: the XOAUTH2 hop's
    password for this start (made by `prepare`)."""
    config = paths.postfix_config
    params = main_cf_parameters(settings, paths, dkim_enabled)
    files = [
        RenderedFile(config / "main.cf", render_main_cf(params)),
        RenderedFile(config / "master.cf", render_master_cf(settings)),
        RenderedFile(
            config / "allowed_senders",
            render_allowed_senders(settings.allowed_sender_domains),
        ),
        RenderedFile(
            config / "smtp_header_checks",
            resources.files("mailstack.render").joinpath("data/smtp_header_checks").read_text(),
            keep_existing=True,
        ),
    ]
    auth = settings.relay_auth
    if settings.xoauth2_enabled:
        auth = hop_login(settings, hop_password) if hop_password else None
    files.append(
        RenderedFile(
            config / "sasl_passwd",
            render_sasl_passwd(*auth) if auth else "",
            mode=0o600,
        )
    )
    return files
