"""MAILSTACK_ROOT and the datastore's location, for every part of mailstack that needs them.

The settings parse MAILSTACK_ROOT with `values.parse_root`, as `mailstack_root` does for a
bare environment; the server, the store and the admin commands all find the datastore with
`database_location`. No pydantic here: the store and the admin commands import this.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mailstack.errors import InvalidInput
from mailstack.paths import Paths
from mailstack.settings.values import parse_root

ROOT_VARIABLE = "MAILSTACK_ROOT"
DATABASE_URL_VARIABLE = "MAILSTACK_DATABASE_URL"


def mailstack_root(environ: Mapping[str, str]) -> Path:
    """MAILSTACK_ROOT of a bare environment; InvalidInput naming it when it is not absolute."""
    try:
        return parse_root(environ.get(ROOT_VARIABLE))
    except ValueError as exc:
        raise InvalidInput(ROOT_VARIABLE, str(exc)) from None


def database_location(root: Path, database_url: str | None = None) -> str:
    """The datastore's URL or SQLite path: MAILSTACK_DATABASE_URL when it is set, else the
    SQLite file under the root (`var/lib/mailstack/mailstack.db`)."""
    return database_url or str(Paths(root).database)


def default_database(environ: Mapping[str, str]) -> str:
    """`database_location` of a bare environment: the admin commands and the store find the
    datastore of the server that runs with the same MAILSTACK_ROOT."""
    url = environ.get(DATABASE_URL_VARIABLE, "").strip()
    return database_location(mailstack_root(environ), url or None)
