"""`mailstack token …`: bearer tokens of the admin REST API (`/api/v1`).

The token is printed once, by `create`; the datastore keeps only its SHA-256, so a lost
token cannot be shown again: revoke it and create another.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mailstack.admin.common import AsJson, Database, group, open_store, show, timestamp

app = group(
    "Bearer tokens of the REST API. An admin token manages everything; a user token "
    "(--user) only that user's password, the aliases delivering to them and their Sieve "
    "scripts."
)

TokenName = Annotated[
    str, typer.Argument(metavar="NAME", help="A name for people: letters, digits, . _ -")
]


@app.command("create")
def create(
    name: TokenName,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            metavar="ADDRESS",
            show_default=False,
            help="Make a token that acts for this user only. Default: an admin token.",
        ),
    ] = None,
    database: Database = None,
) -> None:
    """Create a token and print it (on stdout, alone, once)."""
    with open_store(database) as store:
        info, secret = store.create_token(name, user)
    scope = f"for {info.user}" if info.user else "admin"
    typer.echo(f"created token {info.name} ({scope}); it is shown only now", err=True)
    typer.echo(secret)


@app.command("list")
def list_tokens(as_json: AsJson = False, database: Database = None) -> None:
    """List tokens by name and whom they act for (never the tokens themselves)."""
    with open_store(database) as store:
        found = store.list_tokens()
    records = [
        {"name": t.name, "user": t.user, "admin": t.admin, "created_at": timestamp(t.created_at)}
        for t in found
    ]
    cells = [[t.name, t.user or "(admin)", timestamp(t.created_at)] for t in found]
    show(as_json, records, ["NAME", "USER", "CREATED"], cells, "no tokens")


@app.command("revoke")
def revoke(name: TokenName, database: Database = None) -> None:
    """Delete a token: requests bearing it are refused from now on."""
    with open_store(database) as store:
        store.revoke_token(name)
    typer.echo(f"revoked token {name}")
