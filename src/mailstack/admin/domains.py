"""`mailstack domain …`: hosted domains and their alias domains."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from mailstack.admin.common import AsJson, Database, group, open_store, show, timestamp

app = group("Hosted domains (mail for their users is accepted and stored here) and alias domains.")
alias_app = group(
    "Alias domains: another name of a hosted domain. With example.net an alias of "
    "example.com, mail to anyone@example.net goes to anyone@example.com."
)
app.add_typer(alias_app, name="alias")

#: what `sync_signing` says of a domain the running OpenDKIM signs after its reload
SIGNING_NOW = "OpenDKIM signs its mail now"

DomainName = Annotated[str, typer.Argument(metavar="NAME", help="Domain, e.g. example.com.")]


@app.command("add")
def add(name: DomainName, database: Database = None) -> None:
    """Host a new domain, so that users and aliases can be created in it.

    On a server set up under MAILSTACK_ROOT, its DKIM key is made (DKIM_AUTOGENERATE) and
    the running OpenDKIM signs its mail from now on, without a restart."""
    with open_store(database) as store:
        info = store.add_domain(name)
        hosted = [domain.name for domain in store.list_domains()]
    typer.echo(f"added domain {info.name}")
    _sign_for(info.name, hosted)


def _sign_for(name: str, hosted: list[str]) -> None:
    """Give the new domain its key and have the running OpenDKIM read its tables again."""
    keys = sync_signing(hosted)
    if keys is None or name not in keys:
        return  # no server here, or DKIM_AUTOGENERATE off and no key of its own
    typer.echo(f"DKIM key ready ({keys[name]}); publish it: mailstack dkim show {name}")


def sync_signing(hosted: list[str], purpose: str = "give it a DKIM key") -> dict[str, str] | None:
    """On the server under MAILSTACK_ROOT (as root): keys for the hosted domains, OpenDKIM's
    tables rewritten and reloaded. Domain -> how it is signed; None when nothing was done
    (said on stderr, with `purpose`)."""
    from mailstack.errors import ConfigError
    from mailstack.paths import Paths
    from mailstack.runtime.server import refresh_dkim, reload_opendkim
    from mailstack.settings.locations import mailstack_root
    from mailstack.settings.server import load_server_settings

    paths = Paths(mailstack_root(os.environ))
    if not (paths.opendkim_config / "opendkim.conf").exists():
        return None  # no server set up here (yet): its first start makes the keys
    if os.geteuid() != 0:
        typer.echo(f"note: run as root to {purpose} now; else at the next start", err=True)
        return None
    try:
        settings = load_server_settings(os.environ)
    except ConfigError as exc:
        typer.echo(f"note: no DKIM key made now ({exc}); the next start makes it", err=True)
        return None
    keys = refresh_dkim(settings, paths, hosted)
    how = SIGNING_NOW if reload_opendkim(paths) else "signed from the start"
    return {key.domain: how for key in keys}


@app.command("list")
def list_domains(as_json: AsJson = False, database: Database = None) -> None:
    """List hosted domains with their user and alias counts and alias domains."""
    with open_store(database) as store:
        domains = store.list_domains()
    records = [
        {
            "name": d.name,
            "users": d.users,
            "aliases": d.aliases,
            "alias_domains": list(d.alias_domains),
            "created_at": timestamp(d.created_at),
        }
        for d in domains
    ]
    cells = [
        [d.name, str(d.users), str(d.aliases), ", ".join(d.alias_domains) or "-"] for d in domains
    ]
    show(as_json, records, ["DOMAIN", "USERS", "ALIASES", "ALIAS DOMAINS"], cells, "no domains")


@app.command("remove")
def remove(
    name: DomainName,
    cascade: Annotated[
        bool,
        typer.Option(
            "--cascade",
            help="Also delete its users (with their sieve scripts), aliases and alias domains. "
            "Without it a domain still in use is refused. Mail on disk is never touched.",
        ),
    ] = False,
    database: Database = None,
) -> None:
    """Stop hosting a domain."""
    with open_store(database) as store:
        store.remove_domain(name, cascade=cascade)
    typer.echo(f"removed domain {name}")


@alias_app.command("add")
def add_alias(
    alias: Annotated[str, typer.Argument(metavar="ALIAS", help="The extra name, not hosted.")],
    target: Annotated[str, typer.Argument(metavar="TARGET", help="The hosted domain.")],
    database: Database = None,
) -> None:
    """Make ALIAS another name of the hosted domain TARGET."""
    with open_store(database) as store:
        info = store.add_alias_domain(alias, target)
    typer.echo(f"added alias domain {info.name} -> {info.target}")


@alias_app.command("list")
def list_alias_domains(as_json: AsJson = False, database: Database = None) -> None:
    """List alias domains and the hosted domain each one stands for."""
    with open_store(database) as store:
        aliases = store.list_alias_domains()
    records = [{"name": a.name, "target": a.target} for a in aliases]
    cells = [[a.name, a.target] for a in aliases]
    show(as_json, records, ["ALIAS DOMAIN", "TARGET"], cells, "no alias domains")


@alias_app.command("remove")
def remove_alias(
    alias: Annotated[str, typer.Argument(metavar="ALIAS", help="The alias domain.")],
    database: Database = None,
) -> None:
    """Remove an alias domain; the hosted domain it pointed to is not touched."""
    with open_store(database) as store:
        store.remove_alias_domain(alias)
    typer.echo(f"removed alias domain {alias}")
