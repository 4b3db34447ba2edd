"""`mailstack sieve …`: users' Sieve filter scripts, the same ones ManageSieve edits.

A script is compiled with Pigeonhole's sievec before it is stored: a broken script in the
store would only show up later, as mail that Dovecot files without filtering.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailstack.admin.common import (
    Address,
    AdminError,
    AsJson,
    Database,
    group,
    open_store,
    reporting,
    show,
    timestamp,
)
from mailstack.errors import ExitCode

app = group("Sieve scripts of a user. At most one is active: the one Dovecot runs on delivery.")

ScriptName = Annotated[str, typer.Argument(metavar="NAME", help="The script's name.")]


def _read_source(source: str) -> str:
    """The script text from a file or, for `-`, standard input; Sieve is UTF-8 (RFC 5228)."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise AdminError(f"cannot read {source}: {exc.strerror}", ExitCode.USAGE) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise AdminError(f"{source} is not UTF-8 text", ExitCode.USAGE) from None


@app.command("put")
def put(
    address: Address,
    name: ScriptName,
    source: Annotated[
        str, typer.Argument(metavar="FILE|-", help="The script file, or - for stdin.")
    ],
    activate: Annotated[
        bool, typer.Option("--activate", help="Also make it the active script.")
    ] = False,
    database: Database = None,
) -> None:
    """Check a script with sievec, then create or replace it."""
    from mailstack.sieve.check import check_script

    with reporting():
        text = _read_source(source)
    with open_store(database) as store:
        info = store.put_script(address, name, text, activate=activate, checker=check_script)
    state = ", active" if info.active else ""
    typer.echo(f"stored sieve script {info.name!r} of {address} (version {info.version}{state})")


@app.command("get")
def get(address: Address, name: ScriptName, database: Database = None) -> None:
    """Print a script's text exactly as stored."""
    with open_store(database) as store:
        info = store.get_script(address, name)
    sys.stdout.write(info.content or "")


@app.command("list")
def list_scripts(address: Address, as_json: AsJson = False, database: Database = None) -> None:
    """List a user's scripts; the active one is marked."""
    with open_store(database) as store:
        scripts = store.list_scripts(address)
    records = [
        {
            "name": s.name,
            "active": s.active,
            "size": s.size,
            "version": s.version,
            "updated_at": timestamp(s.updated_at),
        }
        for s in scripts
    ]
    cells = [[s.name, "active" if s.active else "-", str(s.size)] for s in scripts]
    show(as_json, records, ["NAME", "ACTIVE", "BYTES"], cells, "no sieve scripts")


@app.command("activate")
def activate(address: Address, name: ScriptName, database: Database = None) -> None:
    """Make NAME the active script (the previously active one stops running)."""
    with open_store(database) as store:
        store.activate_script(address, name)
    typer.echo(f"sieve script {name!r} of {address} is active")


@app.command("deactivate")
def deactivate(address: Address, database: Database = None) -> None:
    """Run no script for this user; the scripts are kept."""
    with open_store(database) as store:
        store.activate_script(address, None)
    typer.echo(f"no sieve script of {address} is active")


@app.command("remove")
def remove(address: Address, name: ScriptName, database: Database = None) -> None:
    """Delete a script. The active one is refused: deactivate it first."""
    with open_store(database) as store:
        store.remove_script(address, name)
    typer.echo(f"removed sieve script {name!r} of {address}")
