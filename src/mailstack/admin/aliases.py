"""`mailstack alias …`: addresses (or whole domains, as catch-alls) that forward elsewhere."""

from __future__ import annotations

from typing import Annotated

import typer

from mailstack.admin.common import AsJson, Database, DomainFilter, group, open_store, show

app = group(
    "Aliases: mail to SOURCE is delivered to every TARGET. A SOURCE of @example.com is a "
    "catch-all for addresses of example.com that are neither users nor aliases."
)

Source = Annotated[
    str,
    typer.Argument(
        metavar="SOURCE", help="An address in a hosted domain, or @domain for a catch-all."
    ),
]


@app.command("add")
def add(
    source: Source,
    targets: Annotated[
        list[str], typer.Argument(metavar="TARGET...", help="Addresses to deliver to.")
    ],
    database: Database = None,
) -> None:
    """Create an alias, or add targets to an existing one."""
    with open_store(database) as store:
        info = store.add_alias(source, targets)
    typer.echo(f"alias {info.source} -> {', '.join(info.targets)}")


@app.command("list")
def list_aliases(
    domain: DomainFilter = None,
    as_json: AsJson = False,
    database: Database = None,
) -> None:
    """List aliases and their targets."""
    with open_store(database) as store:
        aliases = store.list_aliases(domain)
    records = [
        {
            "source": a.source,
            "domain": a.domain,
            "targets": list(a.targets),
            "catch_all": a.catch_all,
        }
        for a in aliases
    ]
    cells = [[a.source, ", ".join(a.targets)] for a in aliases]
    show(as_json, records, ["SOURCE", "TARGETS"], cells, "no aliases")


@app.command("remove")
def remove(
    source: Source,
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[TARGET...]",
            show_default=False,
            help="Remove only these targets; the alias goes with its last one.",
        ),
    ] = None,
    database: Database = None,
) -> None:
    """Remove an alias, or only some of its targets."""
    with open_store(database) as store:
        store.remove_alias(source, targets or None)
    what = f"targets {', '.join(targets)} of alias" if targets else "alias"
    typer.echo(f"removed {what} {source}")
