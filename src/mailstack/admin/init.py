"""`mailstack init`: the first run of a server in one command.

Asks (at a terminal) or takes (`--domain D --admin ADDRESS --password-stdin
--non-interactive`) the first domain and account; hosts the domain, makes the account (an
administrator), its DKIM key and an admin token for the REST API; writes the settings file
(`MAILSTACK_ROOT/etc/mailstack/mailstack.env`: the server profile and host name, read by
every later command); then prints the password and token (shown only now), the web
interface's address, the TLS certificate's fingerprint, the settings for mail clients and
every DNS record to publish (`mailstack dns`).
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailstack.admin.common import AdminError, Database, open_store, reporting
from mailstack.admin.dkim import record_value, selector_for
from mailstack.admin.dns import MtaStsMode, dns
from mailstack.admin.password_input import PasswordStdin, read_password
from mailstack.errors import ExitCode
from mailstack.paths import Paths
from mailstack.settings.locations import mailstack_root

#: 128 bits in URL-safe text: easy to paste into a mail client, impossible to guess.
PASSWORD_BYTES = 16
#: The server's host name, the setting boky/postfix named after Postfix's parameter.
MYHOSTNAME = "POSTFIX_myhostname"


DomainOption = Annotated[
    str | None,
    typer.Option("--domain", metavar="DOMAIN", help="The first domain to host (or the argument)."),
]


def init(
    domain_argument: Annotated[
        str | None,
        typer.Argument(metavar="[DOMAIN]", help="The first domain to host.", show_default=False),
    ] = None,
    domain_option: DomainOption = None,
    admin: Annotated[
        str | None,
        typer.Option(
            "--admin",
            "--user",
            metavar="ADDRESS",
            help="The first account, an administrator (default: admin@DOMAIN).",
        ),
    ] = None,
    hostname: Annotated[
        str | None,
        typer.Option(
            "--hostname",
            metavar="NAME",
            help="The server's host name (POSTFIX_myhostname; default: its value, else "
            "mail.DOMAIN).",
        ),
    ] = None,
    password_stdin: PasswordStdin = False,
    non_interactive: Annotated[
        bool, typer.Option("--non-interactive", help="Ask nothing; fail on what is missing.")
    ] = False,
    token: Annotated[
        bool, typer.Option("--token/--no-token", help="Also make an admin API token.")
    ] = True,
    database: Database = None,
) -> None:
    """Host DOMAIN with its first (admin) account, DKIM key and an admin API token; write the
    settings file; print what to publish in DNS, the web address and the certificate's
    fingerprint. Asks for what is missing when run at a terminal. Run once, on the server."""
    from mailstack import names
    from mailstack.store import Conflict

    ask = not non_interactive and sys.stdin.isatty() and not password_stdin
    with reporting():
        raw_domain = domain_option or domain_argument
        if raw_domain is None and ask:
            raw_domain = str(typer.prompt("Domain to host (e.g. example.com)"))
        if raw_domain is None:
            raise AdminError("no domain given: DOMAIN or --domain", ExitCode.USAGE)
        name = names.normalise_domain(raw_domain.strip().rstrip("."), "DOMAIN")
        if admin is None and ask:
            admin = str(typer.prompt("Administrator's mail address", default=f"admin@{name}"))
        address = names.normalise_address(admin or f"admin@{name}", "--admin")
        if address.partition("@")[2] != name:
            raise AdminError(f"--admin: {address} is not in {name}", ExitCode.USAGE)
        host = _host_name(hostname, name, ask)
        password = _first_password(password_stdin, ask)
    settings_file = _write_settings(host)
    with open_store(database) as store:
        try:
            store.add_domain(name)
        except Conflict:
            typer.echo(f"{name} is hosted already", err=True)
        store.add_user(address, password.value)
        secret = store.create_token("admin")[1] if token else None
    with reporting():
        root = mailstack_root(os.environ)
        record_value(Paths(root).dkim_keys, name, selector_for(None, name), generate=True)
        fingerprint = _certificate_fingerprint(Paths(root), host)
    typer.echo(f"hosting {name}; account {address}")
    if password.generated:
        typer.echo(
            f"password: {password.value}    (shown only now; change it with "
            "`mailstack user passwd` or in the web interface)"
        )
    if secret is not None:
        typer.echo(f"API token: {secret}    (admin; shown only now)")
    if settings_file is not None:
        typer.echo(f"settings: {settings_file} (the environment wins over it)")
    web = _web_address(host)
    if web is not None:
        typer.echo(f"web interface: {web}")
    typer.echo(f"TLS certificate SHA-256 fingerprint: {fingerprint}")
    typer.echo(
        f"\nmail clients: user name {address}; IMAP {host} port 993 (TLS) or 143 (STARTTLS); "
        f"SMTP {host} port 465 (TLS) or 587 (STARTTLS); most clients find these themselves "
        "(autoconfiguration)"
    )
    typer.echo("\nDNS records to publish (check them later with `mailstack dns --check`):\n")
    dns(name, False, None, MtaStsMode.testing, False, database)


class FirstPassword:
    """The first account's password, and whether mailstack made it (then it is printed)."""

    def __init__(self, value: str, generated: bool) -> None:
        self.value = value
        self.generated = generated


def _first_password(from_stdin: bool, ask: bool) -> FirstPassword:
    """From standard input, a prompt (empty: make one), or made here."""
    if from_stdin:
        value = read_password(None, True)
        if not value:
            raise AdminError("the password on standard input is empty", ExitCode.USAGE)
        return FirstPassword(value, False)
    if ask:
        value = str(
            typer.prompt(
                "Password (empty: make one)",
                default="",
                show_default=False,
                hide_input=True,
                confirmation_prompt=True,
            )
        )
        if value:
            return FirstPassword(value, False)
    return FirstPassword(secrets.token_urlsafe(PASSWORD_BYTES), True)


def _host_name(given: str | None, domain: str, ask: bool) -> str:
    """--hostname, else POSTFIX_myhostname, else (asked, defaulting to) mail.DOMAIN."""
    from mailstack import names

    raw = given or os.environ.get(MYHOSTNAME)
    if raw is None and ask:
        raw = str(typer.prompt("The server's host name", default=f"mail.{domain}"))
    return names.normalise_domain((raw or f"mail.{domain}").strip().rstrip("."), "--hostname")


def _write_settings(host: str) -> Path | None:
    """The settings file with the server profile and the host name; an existing file is kept
    (the first run wrote it; edit it by hand). None when it was there already."""
    from mailstack.runtime.files import write_atomic
    from mailstack.settings.envfile import env_file, render_env_file

    path = env_file(os.environ)
    if path.exists():
        typer.echo(f"keeping the settings in {path}", err=True)
        return None
    values = {"MAILSTACK_PROFILE": "server", MYHOSTNAME: host}
    os.environ.setdefault(MYHOSTNAME, host)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render_env_file(values), 0o600)
    return path


def _certificate_fingerprint(paths: Paths, host: str) -> str:
    """SHA-256 of the certificate the server will present: MAILSTACK_TLS_CERT_FILE's, else
    the self-signed one (made now, as `run` would, so that clients can be told it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from mailstack.runtime.tls import ensure_certificate

    given = os.environ.get("MAILSTACK_TLS_CERT_FILE")
    certificate = Path(given) if given else ensure_certificate(paths.tls, host)[0]
    try:
        loaded = x509.load_pem_x509_certificate(certificate.read_bytes())
    except (OSError, ValueError) as exc:
        raise AdminError(f"cannot read the TLS certificate {certificate}: {exc}") from None
    return loaded.fingerprint(hashes.SHA256()).hex(":").upper()


def _web_address(host: str) -> str | None:
    """The web interface's URL from MAILSTACK_LISTEN_HTTPS (None when it is off)."""
    from mailstack.settings.values import parse_listen

    text = os.environ.get("MAILSTACK_LISTEN_HTTPS", "0.0.0.0:443").strip()
    if not text:
        return None
    try:
        port = parse_listen(text).port
    except ValueError as exc:
        raise AdminError(f"MAILSTACK_LISTEN_HTTPS: {exc}", ExitCode.USAGE) from None
    return f"https://{host}/" if port == 443 else f"https://{host}:{port}/"
