"""`mailstack dkim show`: the DNS record that lets receivers verify a domain's signatures.

Keys are files, not rows: `<MAILSTACK_ROOT>/etc/opendkim/keys/<domain>.private` beside its
`<domain>.txt`, the relay's (and boky/postfix's) layout. This command therefore needs no
database. The record is derived from the private key, the file OpenDKIM actually signs with,
so a stale `.txt` cannot mislead.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mailstack.admin.common import (
    AdminError,
    Database,
    group,
    open_store,
    print_json,
    reporting,
    timestamp,
)
from mailstack.errors import ExitCode
from mailstack.paths import Paths
from mailstack.settings.values import parse_domain, parse_selectors

if TYPE_CHECKING:
    from mailstack.dkim.selectors import SelectorKey

app = group("DKIM signing keys and their DNS records.")

DEFAULT_SELECTOR = "mail"
KEY_OWNER = "opendkim"


def domain_name(raw: str) -> str:
    """The DOMAIN argument, normalised; exit 2 when it is not a domain."""
    try:
        return parse_domain(raw)
    except ValueError as exc:
        raise AdminError(str(exc), ExitCode.USAGE) from None


def selector_for(given: str | None, domain: str) -> str:
    """--selector, else what DKIM_SELECTOR gives this domain (as the relay signs), else mail."""
    raw = given if given is not None else os.environ.get("DKIM_SELECTOR", DEFAULT_SELECTOR)
    where = "--selector" if given is not None else "DKIM_SELECTOR"
    try:
        selectors = parse_selectors(raw)
    except ValueError as exc:
        raise AdminError(f"{where}: {exc}", ExitCode.USAGE) from None
    if given is not None and (selectors.per_domain or "," in given):
        raise AdminError(f"--selector: {given!r} must be a single selector", ExitCode.USAGE)
    return selectors.for_domain(domain)


def _key_owner() -> str | None:
    """OpenDKIM must read the key after dropping privileges; a host without it keeps ours."""
    try:
        pwd.getpwnam(KEY_OWNER)
    except KeyError:
        return None
    return KEY_OWNER if os.geteuid() == 0 else None


def write_new_key(private: Path, domain: str, selector: str) -> bytes:
    """A new key at `private` (0600, OpenDKIM's) and its opendkim-genkey-shaped `.txt`
    beside it, as DKIM_AUTOGENERATE writes them."""
    from mailstack.dkim.keys import generate_private_key, render_txt
    from mailstack.runtime.files import write_atomic

    pem = generate_private_key()
    try:
        write_atomic(private, pem.decode("ascii"), 0o600, _key_owner())
        write_atomic(private.with_suffix(".txt"), render_txt(selector, domain, pem), 0o644)
    except OSError as exc:
        raise AdminError(f"cannot write a key into {private.parent}: {exc.strerror}") from None
    typer.echo(f"generated a new DKIM key for {domain}: {private}", err=True)
    return pem


def record_value(keys_dir: Path, domain: str, selector: str, generate: bool) -> str:
    """The TXT value for `domain`'s key, made first with `generate` when there is none."""
    from mailstack.dkim.keys import dns_record_value, key_path

    private = key_path(keys_dir, domain)
    if not private.exists():
        if not generate:
            raise AdminError(
                f"no DKIM key for {domain}: {private} does not exist (add --generate to create one)"
            )
        return dns_record_value(write_new_key(private, domain, selector))
    return key_record(private)


def key_record(private: Path) -> str:
    """The TXT value derived from a private key file, the one OpenDKIM signs with."""
    from mailstack.dkim.keys import dns_record_value

    try:
        return dns_record_value(private.read_bytes())
    except OSError as exc:
        raise AdminError(f"cannot read the DKIM key {private}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise AdminError(f"{private} is not an unencrypted PEM private key ({exc})") from None


def listed_records(keys_dir: Path, domain: str, selector: str | None) -> list[tuple[str, str, str]]:
    """(selector, TXT value, state) of each of a rotated domain's selectors (only `selector`
    when given); empty for a domain never rotated."""
    from mailstack.dkim.selectors import load_state

    state = load_state(keys_dir, domain)
    if state is None:
        return []
    keys = state.keys if selector is None else (state.get(selector),)
    return [(k.selector, key_record(k.private_key(keys_dir)), k.advice(domain)) for k in keys]


@app.command("show")
def show(
    domain: Annotated[str, typer.Argument(metavar="DOMAIN", help="The signing domain.")],
    selector: Annotated[
        str | None,
        typer.Option(
            "--selector",
            metavar="SELECTOR",
            show_default=False,
            help="Only this selector of a rotated domain. Else the selector to print: "
            "default what DKIM_SELECTOR gives DOMAIN, else 'mail'.",
        ),
    ] = None,
    generate: Annotated[
        bool,
        typer.Option(
            "--generate", help="Create a 2048-bit key if DOMAIN has none (never replaces)."
        ),
    ] = False,
    root: Annotated[
        Path,
        typer.Option(
            "--root",
            envvar="MAILSTACK_ROOT",
            metavar="DIR",
            help="MAILSTACK_ROOT: keys are under DIR/etc/opendkim/keys.",
        ),
    ] = Path("/"),
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print a JSON array: per selector its record (name, type, value), its "
            "state (active, pending, retiring), since when, and from when it may be retired.",
        ),
    ] = False,
) -> None:
    """Print the TXT record to publish for each of DOMAIN's DKIM selectors: its name, value
    and state (active: signs; pending: made by `dkim rotate`, waits for `dkim activate`;
    retiring: signed before, stays published until `dkim retire`)."""
    with reporting():
        name = domain_name(domain)
        chosen = selector_for(selector, name)
        listed = selector_records(Paths(root).dkim_keys, name, selector, chosen, generate)
    if as_json:
        print_json([_as_dict(name, key, value) for key, value in listed])
        return
    for number, (key, value) in enumerate(listed):
        if number:
            typer.echo()
        typer.echo(f"name:  {key.selector}._domainkey.{name}")
        typer.echo("type:  TXT")
        typer.echo(f"value: {value}")
        typer.echo(f"state: {key.advice(name)}")


def selector_records(
    keys_dir: Path, domain: str, given: str | None, chosen: str, generate: bool
) -> list[tuple[SelectorKey, str]]:
    """Each selector of `domain` (only `given` when given) with its TXT value: a rotated
    domain's from its state file, else its one key under `chosen` (made with `generate`)."""
    from mailstack.dkim.selectors import domain_selectors, load_state

    state = load_state(keys_dir, domain)
    if state is not None:
        keys = state.keys if given is None else (state.get(chosen),)
        return [(k, key_record(k.private_key(keys_dir))) for k in keys]
    value = record_value(keys_dir, domain, chosen, generate)
    found = domain_selectors(keys_dir, domain, chosen)
    if found is None:  # removed meanwhile
        raise AdminError(f"no DKIM key for {domain}")
    return [(found.active, value)]


def _as_dict(domain: str, key: SelectorKey, value: str) -> dict[str, object]:
    from mailstack.dkim.selectors import RETIRE_AFTER, State

    retiring = key.state is State.RETIRING
    return {
        "domain": domain,
        "selector": key.selector,
        "name": f"{key.selector}._domainkey.{domain}",
        "type": "TXT",
        "value": value,
        "state": key.state.value,
        "since": timestamp(key.since),
        "retire_after": timestamp(key.since + RETIRE_AFTER) if retiring else None,
    }


@app.command("sync")
def sync(database: Database = None) -> None:
    """Give every hosted domain a key (DKIM_AUTOGENERATE) and have the running OpenDKIM read
    its tables again. Run as root on the server; the server runs it itself when a domain is
    added through the REST API."""
    from mailstack.admin.domains import sync_signing

    with open_store(database) as store:
        hosted = [domain.name for domain in store.list_domains()]
    signed = sync_signing(hosted)
    if signed is None:
        raise typer.Exit(ExitCode.FAILURE)
    for domain, how in sorted(signed.items()):
        typer.echo(f"{domain}: {how}")
