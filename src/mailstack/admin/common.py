"""What every admin command shares: the --database option, opening the store, error
reporting and output.

The store (and with it SQLAlchemy) is imported only when a command runs, so that the relay's
`mailstack run` and `health` do not pay for it at every start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from mailstack.errors import ExitCode, MailstackError

if TYPE_CHECKING:
    from mailstack.store import MailStore

Database = Annotated[
    str | None,
    typer.Option(
        "--database",
        metavar="URL_OR_PATH",
        show_default=False,
        help="Database URL (postgresql://…) or SQLite file path. "
        "Default: MAILSTACK_DATABASE_URL, else MAILSTACK_ROOT/var/lib/mailstack/mailstack.db "
        "(the server profile's datastore). "
        "The schema is created or migrated on first use.",
    ),
]
DomainFilter = Annotated[
    str | None,
    typer.Option("--domain", metavar="DOMAIN", show_default=False, help="Only this domain."),
]
Address = Annotated[
    str, typer.Argument(metavar="ADDRESS", help="The user's address, e.g. alice@example.com.")
]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print a JSON array of objects instead of a table.")
]


def root_option(what: str) -> Any:
    """The `--root` option (MAILSTACK_ROOT) of commands that work on the server's files;
    `what` says which of them."""
    return typer.Option(
        "--root", envvar="MAILSTACK_ROOT", metavar="DIR", help=f"MAILSTACK_ROOT: {what}"
    )


EXIT_CODES = (
    "Exit codes: 0 done; 1 refused (unknown or duplicate name, still in use, no DKIM key); "
    "2 bad input (address, quota, password, script, option); 69 sievec missing; "
    "75 database unreachable (retry later)."
)

_SIZE_UNITS = (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024))


def group(help_text: str) -> typer.Typer:
    """A command group: its help, the exit codes below it, and help when called bare."""
    return typer.Typer(no_args_is_help=True, epilog=EXIT_CODES, help=help_text)


class AdminError(MailstackError):
    """A failure found by the admin CLI itself, with the exit code it deserves."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr and a non-zero exit: what a script or a person can act on."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def one_line(text: str) -> str:
    """Database drivers answer in several lines with a link appended; keep the facts only."""
    return " ".join(text.split("\n(Background on this error")[0].split())


@contextmanager
def reporting() -> Iterator[None]:
    """Turn mailstack's own errors (store errors included) into `fail`, never a traceback."""
    try:
        yield
    except MailstackError as exc:
        fail(one_line(str(exc)), exc.exit_code)


def _shown_url(url: str) -> str:
    """The database URL as it may appear in a message: without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _open(database: str | None) -> MailStore:
    from mailstack.settings.locations import default_database
    from mailstack.store import InvalidInput, MailStore, StoreUnavailable, database_url

    url = database_url(database if database is not None else default_database(os.environ))
    try:
        return MailStore.open(url)
    except InvalidInput as exc:
        # The store names the variable; the value may have come from --database instead.
        where = "--database" if database is not None else exc.field
        raise InvalidInput(where, exc.message) from None
    except (StoreUnavailable, OSError, ImportError) as exc:
        orig = getattr(exc.__cause__, "orig", None)
        detail = one_line(str(orig if orig is not None else exc))
        raise StoreUnavailable(f"cannot open the database {_shown_url(url)}: {detail}") from exc


@contextmanager
def open_store(database: str | None) -> Iterator[MailStore]:
    """The migrated store for one command; its errors are reported by `reporting`."""
    with reporting():
        store = _open(database)
        try:
            yield store
        finally:
            store.close()


def timestamp(value: datetime) -> str:
    return value.isoformat()


def format_size(size: int | None) -> str:
    """Bytes in the largest exact unit (`1G`, `1536M`), a form `--quota` accepts back."""
    if size is None:
        return "unlimited"
    for suffix, factor in _SIZE_UNITS:
        if size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def print_json(rows: Sequence[dict[str, Any]]) -> None:
    typer.echo(json.dumps(list(rows), indent=2, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    """Aligned columns for people; an empty listing says so on stderr, stdout stays empty."""
    if not rows:
        typer.echo(empty, err=True)
        return
    table = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def show(
    as_json: bool,
    records: Sequence[dict[str, Any]],
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    empty: str,
) -> None:
    """Print a listing as JSON (`records`, stable keys) or as a table (`cells`)."""
    if as_json:
        print_json(records)
    else:
        print_table(headers, cells, empty)
