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
from mailstack.admin.dkim import domain_name, key_record, selector_for, write_new_key
from mailstack.admin.dns import check_published, nameserver_option
from mailstack.dkim.keys import dns_record_value
from mailstack.dkim.selectors import (
    RETIRE_AFTER,
    DomainSelectors,
    SelectorKey,
    State,
    domain_selectors,
    load_state,
    locked,
    new_selector,
    save_state,
)
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


def _rotated(keys_dir: Path, domain: str) -> DomainSelectors:
    state = load_state(keys_dir, domain)
    if state is None:
        raise AdminError(f"{domain} was never rotated: `mailstack dkim rotate {domain}` first")
    return state


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
        keys_dir = _keys_dir()
        with locked(keys_dir):
            current = domain_selectors(keys_dir, name, selector_for(None, name))
            if current is None:
                raise AdminError(
                    f"{name} has no DKIM key to rotate: "
                    f"`mailstack dkim show {name} --generate` makes its first"
                )
            now = datetime.now(UTC)
            chosen = (
                new_selector(_selector_format(), now, current.selectors)
                if selector is None
                else selector_for(selector, name)
            )
            state = current.rotated(chosen, now)
            added = state.get(chosen)
            value = dns_record_value(write_new_key(added.private_key(keys_dir), name, chosen))
            save_state(keys_dir, state)
    _print_record(name, added, value)
    typer.echo(
        f"{state.active.selector} keeps signing {name}'s mail until the record above is "
        f"published and `mailstack dkim activate {name} {chosen}` is run"
    )


def _check_published(domain: str, key: SelectorKey, value: str, nameserver: str | None) -> None:
    """Refuse unless DNS answers the selector's name with this key's p= (dnspython)."""
    from mailstack.dns.records import Record

    record = Record("DKIM", f"{key.selector}._domainkey.{domain}", "TXT", value)
    (finding,) = check_published([record], domain, nameserver)
    if finding.status == "ok":
        return
    found = "; ".join(finding.found) or "nothing"
    why = f"{finding.status}: {finding.detail}" if finding.detail else finding.status
    raise AdminError(
        f"the DKIM record {record.name} is not published as expected ({why}; found {found}). "
        f"Publish `{value}` there (`mailstack dkim show {domain}`), wait until it is visible, "
        "and try again; --force skips this check",
        ExitCode.TEMPFAIL if finding.status == "error" else ExitCode.FAILURE,
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
        keys_dir = _keys_dir()
        with locked(keys_dir):
            state = _rotated(keys_dir, name)
            previous = state.active.selector
            state = state.activated(selector, datetime.now(UTC))
            chosen = state.get(selector)
            if not force:
                value = key_record(chosen.private_key(keys_dir))
                _check_published(name, chosen, value, nameserver)
            save_state(keys_dir, state)
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
        keys_dir = _keys_dir()
        with locked(keys_dir):
            state = _rotated(keys_dir, name)
            key = state.get(selector)
            state = state.retired(selector)
            since = datetime.now(UTC) - key.since
            if key.state is State.RETIRING and since < RETIRE_AFTER and not force:
                raise AdminError(
                    f"{selector} stopped signing {name}'s mail {since.days} days ago: mail it "
                    f"signed may still be on its way; retire it after {RETIRE_AFTER.days} days "
                    f"({(key.since + RETIRE_AFTER).date()}), or now with --force"
                )
            save_state(keys_dir, state)
            for path in (key.private_key(keys_dir), key.public_record(keys_dir)):
                path.unlink(missing_ok=True)
        how = _apply(name)
    typer.echo(f"retired {selector} of {name}, {how}; delete its DNS record now")
