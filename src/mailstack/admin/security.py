"""`mailstack user app-password …` and `mailstack user totp-reset`: a user's app passwords
(for mail clients) and the admin's way out when a user lost their TOTP authenticator.

An app password is printed once, by `add`; only its Argon2 hash is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mailstack.admin.common import Address, AsJson, Database, group, open_store, show, timestamp

if TYPE_CHECKING:
    from mailstack.store import MailStore
    from mailstack.store.security import AccountSecurity


def _security(store: MailStore) -> AccountSecurity:
    """Imported here: `mailstack run` registers these commands, and its supervisor must not
    load SQLAlchemy."""
    from mailstack.store.security import AccountSecurity

    return AccountSecurity(store)


app_passwords = group(
    "App passwords: extra passwords for mail clients (IMAP, SMTP submission, ManageSieve). "
    "They never log in to the web UI or the API. With TOTP on, mail clients need one."
)

Name = Annotated[
    str, typer.Argument(metavar="NAME", help="A name for people: letters, digits, . _ -")
]


@app_passwords.command("add")
def add(address: Address, name: Name, database: Database = None) -> None:
    """Make an app password and print it (on stdout, alone, once)."""
    with open_store(database) as store:
        info, secret = _security(store).add_app_password(address, name)
    typer.echo(f"added app password {info.name} for {address}; it is shown only now", err=True)
    typer.echo(secret)


@app_passwords.command("list")
def list_app_passwords(
    address: Address, as_json: AsJson = False, database: Database = None
) -> None:
    """List a user's app passwords by name (never the passwords)."""
    with open_store(database) as store:
        found = _security(store).list_app_passwords(address)
    records = [{"name": p.name, "created_at": timestamp(p.created_at)} for p in found]
    cells = [[p.name, timestamp(p.created_at)] for p in found]
    show(as_json, records, ["NAME", "CREATED"], cells, f"{address} has no app passwords")


@app_passwords.command("remove")
def remove(address: Address, name: Name, database: Database = None) -> None:
    """Revoke an app password: the next login with it fails."""
    with open_store(database) as store:
        _security(store).remove_app_password(address, name)
    typer.echo(f"removed app password {name} of {address}")


def totp_reset(address: Address, database: Database = None) -> None:
    """Turn off a user's TOTP second factor (a lost phone): the password alone logs in to
    the web UI again, and to IMAP and submission."""
    with open_store(database) as store:
        was_on = _security(store).reset_totp(address)
    typer.echo(f"TOTP of {address} reset" if was_on else f"TOTP was not on for {address}")


def register(users: typer.Typer) -> None:
    """Hang the commands under `mailstack user`."""
    users.add_typer(app_passwords, name="app-password")
    users.command("totp-reset")(totp_reset)
