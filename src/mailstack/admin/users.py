"""`mailstack user …`: mailboxes, their passwords, quotas and whether they may log in."""

from __future__ import annotations

from typing import Annotated

import typer

from mailstack.admin.common import (
    Address,
    AsJson,
    Database,
    DomainFilter,
    format_size,
    group,
    open_store,
    reporting,
    show,
    timestamp,
)
from mailstack.admin.password_input import PasswordFile, PasswordStdin, read_password

app = group(
    "Users (mailboxes) of hosted domains. Passwords are read from a file, stdin or a "
    "prompt; never from the command line."
)

QUOTA_HELP = "Mailbox size limit such as 500M, 2G or 1GiB; 0 or 'unlimited' for none."
UNLIMITED = {"unlimited", "none"}
ADMIN_HELP = "May use the web UI's admin pages (domains, users, aliases, the mail queue)."


def _quota(value: str | None) -> str | None:
    """The store's quota syntax, plus the words people type for 'no limit'."""
    if value is not None and value.strip().lower() in UNLIMITED:
        return None
    return value


def _password(password_file: PasswordFile, password_stdin: PasswordStdin) -> str:
    with reporting():
        password = read_password(password_file, password_stdin)
    return password


@app.command("add")
def add(
    address: Address,
    quota: Annotated[
        str | None, typer.Option("--quota", metavar="SIZE", show_default=False, help=QUOTA_HELP)
    ] = None,
    password_file: PasswordFile = None,
    password_stdin: PasswordStdin = False,
    admin: Annotated[bool, typer.Option("--admin", help=ADMIN_HELP)] = False,
    database: Database = None,
) -> None:
    """Create a user in a hosted domain. Without a password option, prompts (twice)."""
    password = _password(password_file, password_stdin)
    with open_store(database) as store:
        info = store.add_user(address, password, quota=_quota(quota), admin=admin)
    role = ", admin" if info.admin else ""
    typer.echo(f"added user {info.address} (quota {format_size(info.quota_bytes)}{role})")


@app.command("list")
def list_users(
    domain: DomainFilter = None,
    as_json: AsJson = False,
    database: Database = None,
) -> None:
    """List users with their quota and whether they may log in."""
    with open_store(database) as store:
        users = store.list_users(domain)
    records = [
        {
            "address": u.address,
            "domain": u.domain,
            "quota_bytes": u.quota_bytes,
            "enabled": u.enabled,
            "admin": u.admin,
            "created_at": timestamp(u.created_at),
        }
        for u in users
    ]
    cells = [
        [
            u.address,
            format_size(u.quota_bytes),
            "enabled" if u.enabled else "disabled",
            "admin" if u.admin else "-",
        ]
        for u in users
    ]
    show(as_json, records, ["ADDRESS", "QUOTA", "LOGIN", "ROLE"], cells, "no users")


@app.command("passwd")
def passwd(
    address: Address,
    password_file: PasswordFile = None,
    password_stdin: PasswordStdin = False,
    database: Database = None,
) -> None:
    """Set a user's password. Without a password option, prompts (twice)."""
    password = _password(password_file, password_stdin)
    with open_store(database) as store:
        store.set_password(address, password)
    typer.echo(f"password of {address} changed")


@app.command("disable")
def disable(address: Address, database: Database = None) -> None:
    """Refuse the user's logins (IMAP, submission, ManageSieve); mail is still delivered."""
    with open_store(database) as store:
        store.disable_user(address)
    typer.echo(f"disabled {address}: logins are refused, mail is still delivered")


@app.command("enable")
def enable(address: Address, database: Database = None) -> None:
    """Allow a disabled user to log in again."""
    with open_store(database) as store:
        store.enable_user(address)
    typer.echo(f"enabled {address}")


@app.command("set-admin")
def set_admin(
    address: Address,
    off: Annotated[bool, typer.Option("--off", help="Take the admin flag away instead.")] = False,
    database: Database = None,
) -> None:
    """Let the user use the web UI's admin pages (log in with the address and password)."""
    with open_store(database) as store:
        info = store.set_admin(address, not off)
    typer.echo(f"{info.address} is {'now' if info.admin else 'no longer'} an admin")


@app.command("remove")
def remove(address: Address, database: Database = None) -> None:
    """Delete the user and their sieve scripts; the mail on disk is left alone."""
    with open_store(database) as store:
        store.remove_user(address)
    typer.echo(f"removed user {address}")


@app.command("quota")
def quota(
    address: Address,
    size: Annotated[str, typer.Argument(metavar="SIZE", help=QUOTA_HELP)],
    database: Database = None,
) -> None:
    """Change a user's mailbox size limit."""
    with open_store(database) as store:
        info = store.set_quota(address, _quota(size))
    typer.echo(f"quota of {info.address} is now {format_size(info.quota_bytes)}")
