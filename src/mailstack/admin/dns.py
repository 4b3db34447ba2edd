"""`mailstack dns DOMAIN [--check]`: the DNS records a hosted domain needs, and whether they
are published.

The records come from what the server runs with: POSTFIX_myhostname (the MX host),
MAILSTACK_LISTEN_* (the client ports announced with SRV records), DKIM_SELECTOR and the key
under MAILSTACK_ROOT/etc/opendkim/keys. dnspython is imported only by --check.
"""

from __future__ import annotations

import os
import socket
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mailstack.admin.common import AdminError, AsJson, Database, open_store, print_json, reporting
from mailstack.dns.records import DkimKey, Record, expected_records, zone_text
from mailstack.errors import ExitCode
from mailstack.paths import Paths

if TYPE_CHECKING:
    from mailstack.dns.check import Finding
    from mailstack.store import MailStore

EPILOG = (
    "Exit codes: 0 printed, or (--check) every record is published as expected; 1 the domain "
    "is not hosted, or (--check) a record is missing or wrong, a lookup failed or the domain "
    "has no DKIM key; 2 bad input (domain, option, POSTFIX_myhostname, MAILSTACK_LISTEN_*); "
    "75 database unreachable (retry later)."
)

#: The listeners announced with SRV records.
CLIENT_LISTENERS = ("imap", "imaps", "submission", "submissions")


class MtaStsMode(StrEnum):
    testing = "testing"
    enforce = "enforce"
    none = "none"


def register(app: typer.Typer) -> None:
    """Add `dns` to the main app (one command, not a group)."""
    app.command("dns", no_args_is_help=True, epilog=EPILOG)(dns)


def server_name() -> str:
    """POSTFIX_myhostname, else HOSTNAME, else the FQDN: the name the server runs with."""
    from mailstack import names
    from mailstack.errors import Problem
    from mailstack.settings.environ import myhostname

    problems: list[Problem] = []
    raw = myhostname(os.environ, problems) or socket.getfqdn()
    if problems:
        raise AdminError(str(problems[0]), ExitCode.USAGE)
    return names.normalise_domain(raw.rstrip("."), "POSTFIX_myhostname")


def _client_ports() -> dict[str, int | None]:
    """The ports of the client listeners; None for one disabled by an empty variable."""
    from mailstack.settings.server import LISTENERS
    from mailstack.settings.values import parse_listen

    ports: dict[str, int | None] = {}
    for listener in CLIENT_LISTENERS:
        variable, default = LISTENERS[listener]
        if variable not in os.environ:
            ports[listener] = default.port
            continue
        text = os.environ[variable].strip()
        try:
            ports[listener] = parse_listen(text).port if text else None
        except ValueError as exc:
            raise AdminError(f"{variable}: {exc}", ExitCode.USAGE) from None
    return ports


def _dkim_key_file(domain: str) -> Path:
    from mailstack.dkim.keys import key_path
    from mailstack.settings.locations import mailstack_root

    return key_path(Paths(mailstack_root(os.environ)).dkim_keys, domain)


def _selector(domain: str) -> str:
    """The selector DKIM_SELECTOR gives the domain (`mail` without it), as the server signs."""
    from mailstack.settings.values import parse_selectors

    try:
        return parse_selectors(os.environ.get("DKIM_SELECTOR", "mail")).for_domain(domain)
    except ValueError as exc:
        raise AdminError(f"DKIM_SELECTOR: {exc}", ExitCode.USAGE) from None


def _dkim_keys(domain: str) -> list[DkimKey]:
    """The domain's keys with their selectors and states, as `mailstack dkim show` prints
    them: every selector of a rotated domain, else its `<domain>.private`; none when there
    is no key file."""
    from mailstack.admin.dkim import key_record, listed_records

    private = _dkim_key_file(domain)
    rotated = listed_records(private.parent, domain, None)
    if rotated:
        return [DkimKey(selector, value, state) for selector, value, state in rotated]
    if not private.exists():
        return []
    return [DkimKey(_selector(domain), key_record(private))]


def _hosted(store: MailStore, domain: str) -> None:
    from mailstack.store.errors import NotFound

    if any(d.name == domain for d in store.list_domains()):
        return
    targets = {a.name: a.target for a in store.list_alias_domains()}
    hint = f" (it is an alias domain of {targets[domain]})" if domain in targets else ""
    raise NotFound(f"domain {domain} is not hosted here{hint}")


def _no_key_finding(domain: str) -> Finding:
    from mailstack.dns.check import Finding

    detail = (
        f"no DKIM key on this server ({_dkim_key_file(domain)}): "
        f"`mailstack dkim show {domain} --generate` creates one"
    )
    name = f"{_selector(domain)}._domainkey.{domain}"
    record = Record("DKIM", name, "TXT", "", "the domain's DKIM key")
    return Finding(record, "error", (), detail)


def nameserver_option(when: str) -> Any:
    """The --nameserver option (`when` begins its help, e.g. "With --check: ")."""
    return typer.Option(
        "--nameserver",
        metavar="ADDR[:PORT]",
        show_default=False,
        help=f"{when}ask this name server ([IPV6]:PORT for IPv6 with a port). "
        "Default: the system's resolver.",
    )


def check_published(records: list[Record], server: str, nameserver: str | None) -> list[Finding]:
    """Resolve `records` (through --nameserver's server, else the system's resolver)."""
    from mailstack.dns.check import DnsLookup, check_records
    from mailstack.settings.values import parse_nameserver

    address = None
    if nameserver is not None:
        try:
            address = parse_nameserver(nameserver)
        except ValueError as exc:
            raise AdminError(f"--nameserver: {exc}", ExitCode.USAGE) from None
    return check_records(records, server, DnsLookup(address))


def _print_findings(findings: list[Finding]) -> None:
    headers = ("STATUS", "PURPOSE", "TYPE", "NAME")
    rows = [(f.status, f.record.purpose, f.record.rtype, f.record.name) for f in findings]
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(3)]
    indent = " " * (widths[0] + 2)
    for row, finding in zip((headers, *rows), (None, *findings), strict=True):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, row[3]]))
        if finding is None or finding.status == "ok":
            continue
        if finding.record.value:
            typer.echo(f"{indent}expected: {finding.record.value}")
        for found in finding.found:
            typer.echo(f"{indent}found:    {found}")
        if finding.detail:
            typer.echo(f"{indent}{finding.detail}")
    failed = sum(f.failed for f in findings)
    if failed:
        typer.echo(f"{failed} of {len(findings)} records need attention")
    else:
        typer.echo(f"all {len(findings)} records are published as expected")


def dns(
    domain: Annotated[str, typer.Argument(metavar="DOMAIN", help="A hosted domain.")],
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Resolve the records and report each one as ok, missing or wrong "
            "(with the expected value); exit 1 unless all are ok.",
        ),
    ] = False,
    nameserver: Annotated[str | None, nameserver_option("With --check: ")] = None,
    mta_sts_mode: Annotated[
        MtaStsMode,
        typer.Option(
            "--mta-sts-mode",
            help="The mode of the MTA-STS policy (its id is derived from the policy). "
            "Use enforce once the server's certificate is valid for its name.",
        ),
    ] = MtaStsMode.testing,
    as_json: AsJson = False,
    database: Database = None,
) -> None:
    """Print the DNS records to publish for DOMAIN (zone-file lines), or check them."""
    from mailstack import names

    with reporting():
        name = names.normalise_domain(domain.rstrip("."), "DOMAIN")
        server = server_name()
        ports = _client_ports()
        keys = _dkim_keys(name)
    with open_store(database) as store:
        _hosted(store, name)
    records = expected_records(name, server, ports, keys, mta_sts_mode.value)
    if not check:
        if not keys:
            typer.echo(f"warning: {_no_key_finding(name).detail}", err=True)
        if as_json:
            print_json([record.as_dict() for record in records])
        else:
            typer.echo(zone_text(name, server, records, mta_sts_mode.value), nl=False)
        return
    with reporting():
        findings = check_published(records, server, nameserver)
    if not keys:
        findings.append(_no_key_finding(name))
    if as_json:
        print_json([finding.as_dict() for finding in findings])
    else:
        _print_findings(findings)
    if any(finding.failed for finding in findings):
        raise typer.Exit(ExitCode.FAILURE)
