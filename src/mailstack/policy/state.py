"""The greylisting state in the datastore (SQLite or PostgreSQL), shared by every Postfix
instance and worker replica that uses the same database.

Every write is one statement in autocommit mode. A change of state is compare-and-set: a
new record is `INSERT ... ON CONFLICT DO NOTHING` (no row written: another instance
inserted it first), a change is `UPDATE ... WHERE` the columns still hold what was read (no
row: another instance changed it meanwhile); `Greylist` then reads and decides again, so
two instances judging one triplet at the same moment both answer consistently and neither
write is lost. Another pass of an already passed triplet is a plain atomic
`UPDATE ... SET passed = passed + 1`, so a busy triplet never starves. No
transaction stays open between statements, so SQLite is locked one statement at a time.

Each thread keeps one connection, as the lookup resolver does. A statement that fails on a
dropped connection is retried once on a new one; any other database error becomes
StoreUnavailable (the policy server then lets the mail through).

The allow-list functions at the end are for administrators (CLI, API): one transaction
each, values normalised first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    and_,
    case,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql import Executable

from mailstack.policy.greylist import (
    KINDS,
    ClientRecord,
    GreylistConfig,
    Query,
    Seen,
    normalise_allow_entry,
    purge_cutoffs,
)
from mailstack.store import tables
from mailstack.store.errors import Conflict, InvalidInput, NotFound, StoreUnavailable

_triplets = tables.greylist_triplets
_clients = tables.greylist_clients
_allow = tables.greylist_allow

# A compare-and-set write reads its rowcount; without this, SQLAlchemy does not keep it for
# an INSERT on PostgreSQL (it reports -1).
_COUNTED = {"preserve_rowcount": True}


class SqlState:
    """GreylistState on a SQLAlchemy engine; thread-safe (one connection per thread)."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"greylisting needs SQLite or PostgreSQL, not {dialect}")
        self.engine = engine
        self._insert: Callable[[Any], Any] = (
            sqlite.insert if dialect == "sqlite" else postgresql.insert
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Connection] = []

    # -- connections -----------------------------------------------------------------------

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn: Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            with contextlib.suppress(SQLAlchemyError):
                conn.invalidate()
                conn.close()

    def _execute(self, statement: Executable) -> CursorResult[Any]:
        for attempt in (1, 2):
            try:
                return self._connection().execute(statement, execution_options=_COUNTED)
            except SQLAlchemyError as exc:
                self._drop_connection()
                dropped = isinstance(exc, DBAPIError) and exc.connection_invalidated
                if attempt == 2 or not dropped:
                    raise StoreUnavailable(f"greylist state: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close every thread's connection (once the threads are done)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(SQLAlchemyError):
                conn.close()

    # -- GreylistState ---------------------------------------------------------------------

    def allow_listed(self, candidates: Collection[tuple[str, str]]) -> bool:
        by_kind: dict[str, list[str]] = {}
        for kind, value in candidates:
            by_kind.setdefault(kind, []).append(value)
        if not by_kind:
            return False
        matches = [
            and_(_allow.c.kind == kind, _allow.c.value.in_(sorted(values)))
            for kind, values in sorted(by_kind.items())
        ]
        return self._execute(select(_allow.c.id).where(or_(*matches)).limit(1)).first() is not None

    def triplet(self, query: Query) -> Seen | None:
        statement = select(_triplets.c.first_seen, _triplets.c.last_seen, _triplets.c.passed)
        row = self._execute(statement.where(_triplets.c.key == query.key)).first()
        if row is None:
            return None
        first, last, passed = (int(value) for value in row)
        return Seen(first, last, passed)

    def save_triplet(self, query: Query, old: Seen | None, new: Seen) -> bool:
        values = {"first_seen": new.first, "last_seen": new.last, "passed": new.passed}
        if old is None:
            statement = (
                self._insert(_triplets)
                .values(
                    key=query.key,
                    client_network=query.network,
                    sender=query.sender,
                    recipient=query.recipient,
                    **values,
                )
                .on_conflict_do_nothing(index_elements=["key"])
            )
        else:
            statement = (
                update(_triplets)
                .where(
                    _triplets.c.key == query.key,
                    _triplets.c.first_seen == old.first,
                    _triplets.c.last_seen == old.last,
                    _triplets.c.passed == old.passed,
                )
                .values(**values)
            )
        return self._execute(statement).rowcount == 1

    def touch_triplet(self, query: Query, now: int, oldest: int) -> bool:
        last = _triplets.c.last_seen
        statement = (
            update(_triplets)
            .where(_triplets.c.key == query.key, _triplets.c.passed > 0, last >= oldest)
            .values(passed=_triplets.c.passed + 1, last_seen=case((last < now, now), else_=last))
        )
        return self._execute(statement).rowcount == 1

    def client(self, network: str) -> ClientRecord | None:
        statement = select(_clients.c.successes, _clients.c.last_seen)
        row = self._execute(statement.where(_clients.c.network == network)).first()
        if row is None:
            return None
        successes, last = (int(value) for value in row)
        return ClientRecord(successes, last)

    def save_client(self, network: str, old: ClientRecord | None, new: ClientRecord) -> bool:
        if old is None:
            statement = (
                self._insert(_clients)
                .values(network=network, successes=new.successes, last_seen=new.last)
                .on_conflict_do_nothing(index_elements=["network"])
            )
        else:
            statement = (
                update(_clients)
                .where(
                    _clients.c.network == network,
                    _clients.c.successes == old.successes,
                    _clients.c.last_seen == old.last,
                )
                .values(successes=new.successes, last_seen=new.last)
            )
        return self._execute(statement).rowcount == 1

    def purge(self, now: int, config: GreylistConfig) -> int:
        old, unpassed = purge_cutoffs(now, config)
        triplets = delete(_triplets).where(
            or_(
                _triplets.c.last_seen < old,
                and_(_triplets.c.passed == 0, _triplets.c.last_seen < unpassed),
            )
        )
        clients = delete(_clients).where(_clients.c.last_seen < old)
        return self._execute(triplets).rowcount + self._execute(clients).rowcount


# -- the administrators' allow list ---------------------------------------------------------


@dataclass(frozen=True)
class AllowEntry:
    kind: str
    value: str
    comment: str | None
    created_at: datetime


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidInput("kind", f"{kind!r} is not one of {', '.join(KINDS)}")


def add_allow_entry(
    engine: Engine, kind: str, value: str, comment: str | None = None
) -> AllowEntry:
    """Never greylist what matches: Conflict if the entry exists, InvalidInput if bad."""
    _check_kind(kind)
    entry = AllowEntry(kind, normalise_allow_entry(kind, value), comment, tables.utcnow())
    try:
        with engine.begin() as conn:
            conn.execute(
                _allow.insert().values(
                    kind=entry.kind,
                    value=entry.value,
                    comment=entry.comment,
                    created_at=entry.created_at,
                )
            )
    except IntegrityError:
        raise Conflict(f"greylist allow {kind} {entry.value} already exists") from None
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"could not add a greylist allow entry: {exc}") from exc
    return entry


def remove_allow_entry(engine: Engine, kind: str, value: str) -> None:
    _check_kind(kind)
    canonical = normalise_allow_entry(kind, value)
    try:
        with engine.begin() as conn:
            result = conn.execute(
                delete(_allow).where(_allow.c.kind == kind, _allow.c.value == canonical)
            )
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"could not remove a greylist allow entry: {exc}") from exc
    if result.rowcount == 0:
        raise NotFound(f"greylist allow {kind} {canonical} does not exist")


def list_allow_entries(engine: Engine) -> list[AllowEntry]:
    statement = select(_allow.c.kind, _allow.c.value, _allow.c.comment, _allow.c.created_at)
    try:
        with engine.connect() as conn:
            rows = conn.execute(statement.order_by(_allow.c.kind, _allow.c.value)).all()
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"could not list the greylist allow entries: {exc}") from exc
    return [AllowEntry(*row) for row in rows]
