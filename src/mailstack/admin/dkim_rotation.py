"""`mailstack dkim rotate|activate|retire`: replace a domain's DKIM key with no moment in
which receivers cannot verify its mail.

`rotate` makes a key under a new selector and prints its record; the old key keeps signing.
`activate` (once that record is published: checked with dnspython unless --force) makes the
new key sign; the old selector retires but its record must stay published for days, since
mail signed with it may still be in flight. `retire` then forgets it. The state lives in
`selectors/<domain>.json` beside the keys (`mailstack.dkim.selectors`); activate and retire
have the running OpenDKIM read its tables again (SIGUSR1), so no restart is needed.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from mailstack.admin.common import AdminError, reporting
from mailstack.admin.dkim import domain_name, selector_for, write_new_key
from mailstack.admin.dns import nameserver_option
from mailstack.dkim import rotation
from mailstack.dkim.selectors import RETIRE_AFTER, SelectorKey
from mailstack.errors import ExitCode
from mailstack.paths import Paths
from mailstack.settings.values import DEFAULT_SELECTOR_FORMAT

FORMAT_VARIABLE = "MAILSTACK_DKIM_ROTATE_SELECTOR"

Domain = Annotated[str, typer.Argument(metavar="DOMAIN", help="The signing domain.")]
Selector = Annotated[str, typer.Argument(metavar="SELECTOR", help="One of DOMAIN's selectors.")]


def register(app: typer.Typer) -> None:
    """Add rotate, activate and retire to the `dkim` group."""
    app.command("rotate")(rotate)
    app.command("activate")(activate)
    app.command("retire")(retire)


def _keys_dir() -> Path:
    from mailstack.settings.locations import mailstack_root

    return Paths(mailstack_root(os.environ)).dkim_keys


def _selector_format() -> str:
    from mailstack.settings.values import parse_selector_format

    try:
        return parse_selector_format(os.environ.get(FORMAT_VARIABLE, DEFAULT_SELECTOR_FORMAT))
    except ValueError as exc:
        raise AdminError(f"{FORMAT_VARIABLE}: {exc}", ExitCode.USAGE) from None


def _nameserver(given: str | None) -> tuple[str, int] | None:
    from mailstack.settings.values import parse_nameserver

    if given is None:
        return None
    try:
        return parse_nameserver(given)
    except ValueError as exc:
        raise AdminError(f"--nameserver: {exc}", ExitCode.USAGE) from None


def _print_record(domain: str, key: SelectorKey, value: str) -> None:
    typer.echo(f"name:  {key.selector}._domainkey.{domain}")
    typer.echo("type:  TXT")
    typer.echo(f"value: {value}")
    typer.echo(f"state: {key.advice(domain)}")


def _apply(domain: str) -> str:
    """OpenDKIM's tables rewritten from the new state and read again by the running one;
    when the change applies."""
    from mailstack.admin.domains import SIGNING_NOW, sync_signing

    signed = sync_signing([], "apply this")
    if signed is not None and signed.get(domain) == SIGNING_NOW:
        return "now: the running OpenDKIM has read its tables again"
    return "from the server's next start"


def rotate(
    domain: Domain,
    selector: Annotated[
        str | None,
        typer.Option(
            "--selector",
            metavar="NEW",
            show_default=False,
            help=f"The new selector. Default: the date in {FORMAT_VARIABLE}'s pattern "
            f"({DEFAULT_SELECTOR_FORMAT}: ms202611), with -2, -3... if DOMAIN already has it.",
        ),
    ] = None,
) -> None:
    """Make a new key for DOMAIN under a new selector and print the TXT record to publish.
    The current key keeps signing until `mailstack dkim activate DOMAIN NEW`."""
    with reporting():
        name = domain_name(domain)
        made = rotation.rotate(
            _keys_dir(),
            name,
            None if selector is None else selector_for(selector, name),
            default_selector=selector_for(None, name),
            pattern=_selector_format(),
            now=datetime.now(UTC),
            write_key=write_new_key,
        )
    state, added, value, chosen = made.state, made.added, made.value, made.added.selector
    _print_record(name, added, value)
    typer.echo(
        f"{state.active.selector} keeps signing {name}'s mail until the record above is "
        f"published and `mailstack dkim activate {name} {chosen}` is run"
    )


def activate(
    domain: Domain,
    selector: Selector,
    force: Annotated[
        bool, typer.Option("--force", help="Do not check that the record is published.")
    ] = False,
    nameserver: Annotated[str | None, nameserver_option("To check the record, ")] = None,
) -> None:
    """Sign DOMAIN's mail with SELECTOR (pending, or retiring to roll back) from now on,
    once DNS publishes its record. The selector that signed until now retires."""
    with reporting():
        name = domain_name(domain)
        check = None if force else rotation.dns_check(_nameserver(nameserver), "--force")
        previous, state = rotation.activate(
            _keys_dir(), name, selector, now=datetime.now(UTC), check=check
        )
        how = _apply(name)
    typer.echo(f"{selector} signs {name}'s mail {how}")
    typer.echo(f"{previous}: {state.get(previous).advice(name)}")


def retire(
    domain: Domain,
    selector: Selector,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help=f"Retire a selector that stopped signing less than {RETIRE_AFTER.days} days ago.",
        ),
    ] = False,
) -> None:
    """Remove a retiring (or pending) selector of DOMAIN and its key; then delete its DNS
    record."""
    with reporting():
        name = domain_name(domain)
        rotation.retire(_keys_dir(), name, selector, now=datetime.now(UTC), force=force)
        how = _apply(name)
    typer.echo(f"retired {selector} of {name}, {how}; delete its DNS record now")
