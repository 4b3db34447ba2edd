"""`mailstack init DOMAIN --user ADDRESS`: the first run of a server in one command.

Hosts the domain, makes its first account with a generated password, its DKIM key and an
admin token for the REST API, then prints the password and token (shown only now), the
settings for mail clients, and every DNS record to publish (`mailstack dns`).
"""

from __future__ import annotations

import os
import secrets
from typing import Annotated

import typer

from mailstack.admin.common import AdminError, Database, open_store, reporting
from mailstack.admin.dkim import record_value, selector_for
from mailstack.admin.dns import MtaStsMode, dns, server_name
from mailstack.errors import ExitCode
from mailstack.paths import Paths
from mailstack.settings.locations import mailstack_root

#: 128 bits in URL-safe text: easy to paste into a mail client, impossible to guess.
PASSWORD_BYTES = 16


def init(
    domain: Annotated[str, typer.Argument(metavar="DOMAIN", help="The first domain to host.")],
    user: Annotated[
        str,
        typer.Option(
            "--user", metavar="ADDRESS", help="The first account, e.g. you@DOMAIN (made here)."
        ),
    ],
    token: Annotated[
        bool, typer.Option("--token/--no-token", help="Also make an admin API token.")
    ] = True,
    database: Database = None,
) -> None:
    """Host DOMAIN with its first account, DKIM key and an admin API token; print what to
    publish in DNS and how mail clients connect. Run once, on the server."""
    from mailstack import names
    from mailstack.store import Conflict

    password = secrets.token_urlsafe(PASSWORD_BYTES)
    with reporting():
        name = names.normalise_domain(domain.rstrip("."), "DOMAIN")
        address = names.normalise_address(user, "--user")
        if address.partition("@")[2] != name:
            raise AdminError(f"--user: {address} is not in {name}", ExitCode.USAGE)
    with open_store(database) as store:
        try:
            store.add_domain(name)
        except Conflict:
            typer.echo(f"{name} is hosted already", err=True)
        store.add_user(address, password)
        secret = store.create_token("admin")[1] if token else None
    with reporting():
        root = mailstack_root(os.environ)
        record_value(Paths(root).dkim_keys, name, selector_for(None, name), generate=True)
    typer.echo(f"hosting {name}; account {address}")
    typer.echo(f"password: {password}    (shown only now; change it with `mailstack user passwd`)")
    if secret is not None:
        typer.echo(f"API token: {secret}    (admin; shown only now)")
    with reporting():
        host = server_name()
    typer.echo(
        f"\nmail clients: user name {address}; IMAP {host} port 993 (TLS) or 143 (STARTTLS); "
        f"SMTP {host} port 465 (TLS) or 587 (STARTTLS); most clients find these themselves "
        "(autoconfiguration)"
    )
    typer.echo("\nDNS records to publish (check them later with `mailstack dns --check`):\n")
    dns(name, False, None, MtaStsMode.testing, False, database)
