"""Answers to the mail daemons' questions, read from the store on every request.

Each worker thread keeps one connection in autocommit mode, so every query sees the latest
committed data (no snapshot held open between lookups) and no pool checkout is paid per
request. Queries are written as SQLAlchemy Core statements (one schema, both databases),
compiled once per dialect, and run directly on the DBAPI cursor. Any database failure
becomes `StoreUnavailable`, which the servers turn into a temporary failure.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    case,
    exists,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from mailstack.names import split_address
from mailstack.store import tables
from mailstack.store.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Executable

MAX_EXPANSION = 50  # addresses visited when finding who may send as an address

_domains = tables.domains
_alias_domains = tables.alias_domains
_users = tables.users
_aliases = tables.aliases
_targets = tables.alias_targets
_scripts = tables.sieve_scripts
_app_passwords = tables.app_passwords
_totp = tables.user_totp

# How an address resolves, lowest kind wins: an explicit alias, then a mailbox, then the
# domain's catch-all, then an alias domain. One round trip answers all four questions.
KIND_ALIAS, KIND_MAILBOX, KIND_CATCH_ALL, KIND_ALIAS_DOMAIN = 1, 2, 3, 4

_RESOLVE = union_all(
    select(
        literal_column(str(KIND_ALIAS)).label("kind"),
        _targets.c.target.label("value"),
        _targets.c.id.label("position"),
        literal_column("1").label("enabled"),
    )
    .select_from(_aliases.join(_targets, _targets.c.alias_id == _aliases.c.id))
    .where(_aliases.c.source == bindparam("address")),
    select(
        literal_column(str(KIND_MAILBOX)),
        _users.c.address,
        literal_column("0"),
        case((_users.c.enabled, 1), else_=0),
    ).where(_users.c.address == bindparam("address")),
    select(
        literal_column(str(KIND_CATCH_ALL)),
        _targets.c.target,
        _targets.c.id,
        literal_column("1"),
    )
    .select_from(_aliases.join(_targets, _targets.c.alias_id == _aliases.c.id))
    .where(_aliases.c.source == bindparam("catch_all")),
    select(
        literal_column(str(KIND_ALIAS_DOMAIN)),
        _domains.c.name,
        literal_column("0"),
        literal_column("1"),
    )
    .select_from(_alias_domains.join(_domains, _alias_domains.c.target_id == _domains.c.id))
    .where(_alias_domains.c.name == bindparam("domain")),
)

_DOMAIN = select(_domains.c.name).where(_domains.c.name == bindparam("name"))
_ALIAS_DOMAIN = (
    select(_domains.c.name)
    .select_from(_alias_domains.join(_domains, _alias_domains.c.target_id == _domains.c.id))
    .where(_alias_domains.c.name == bindparam("name"))
)
# a domain mail is taken for: hosted, or an alias of a hosted one (one query, one answer)
_MAIL_DOMAIN = union_all(_DOMAIN, _ALIAS_DOMAIN)
_MAILBOX = select(_users.c.address).where(_users.c.address == bindparam("address"))
_CATCH_ALL = (
    select(_targets.c.target)
    .select_from(_aliases.join(_targets, _targets.c.alias_id == _aliases.c.id))
    .where(_aliases.c.source == bindparam("source"))
    .order_by(_targets.c.id)
)
_USER = select(
    _users.c.address,
    _users.c.password_hash,
    _users.c.quota_bytes,
    _users.c.enabled,
    _users.c.spam_threshold,
    _users.c.spam_filter,
    exists().where(_totp.c.user_id == _users.c.id, _totp.c.enabled).label("totp"),
    exists().where(_scripts.c.user_id == _users.c.id, _scripts.c.active).label("sieve"),
).where(_users.c.address == bindparam("address"))
_APP_PASSWORD = (
    select(_app_passwords.c.password_hash)
    .select_from(_app_passwords.join(_users, _app_passwords.c.user_id == _users.c.id))
    .where(
        _users.c.address == bindparam("address"),
        _users.c.enabled,
        _app_passwords.c.ident == bindparam("ident"),
    )
)
_ALL_USERS = select(_users.c.address, _users.c.quota_bytes).order_by(_users.c.address)
_script_owner = _scripts.join(_users, _scripts.c.user_id == _users.c.id)
_ACTIVE_SCRIPT = (
    select(_scripts.c.id, _scripts.c.version)
    .select_from(_script_owner)
    .where(_users.c.address == bindparam("address"), _scripts.c.active)
)
_NAMED_SCRIPT = (
    select(_scripts.c.id, _scripts.c.version)
    .select_from(_script_owner)
    .where(_users.c.address == bindparam("address"), _scripts.c.name == bindparam("name"))
)
_SCRIPT_DATA = (
    select(_scripts.c.content)
    .select_from(_script_owner)
    .where(_users.c.address == bindparam("address"), _scripts.c.id == bindparam("id"))
)


@dataclass(frozen=True)
class _Prepared:
    sql: str
    compiled: SQLCompiler
    order: tuple[str, ...]  # parameter names, for positional paramstyles (SQLite's qmark)


@dataclass
class _Worker:
    """One worker thread's connection and reusable cursor."""

    conn: Connection
    cursor: Any

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.cursor.close()
        with contextlib.suppress(SQLAlchemyError):
            self.conn.invalidate()
            self.conn.close()


@dataclass(frozen=True)
class Resolution:
    """How one address resolves: the winning kind and its values, in order."""

    kind: int
    values: tuple[str, ...]
    enabled: bool = True


@dataclass(frozen=True)
class Account:
    address: str
    password_hash: str
    quota_bytes: int | None
    enabled: bool
    spam_threshold: int | None = None
    spam_filter: bool = True
    totp: bool = False  # the account password is then refused over IMAP and submission
    active_script: bool = True  # whether the user has an active Sieve script


class Resolver:
    """Synchronous, thread-safe reads for the lookup servers (inline or in worker threads)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._prepared: dict[Executable, _Prepared] = {}

    # -- connection handling ---------------------------------------------------------------

    def _connection(self) -> _Worker:
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is None:
            try:
                conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                dbapi_conn = conn.connection.dbapi_connection
                if dbapi_conn is None:  # pragma: no cover - a fresh connection always has one
                    raise StoreUnavailable("store connection has no DBAPI connection")
                worker = _Worker(conn, dbapi_conn.cursor())
            except SQLAlchemyError as exc:
                raise StoreUnavailable(f"cannot connect to the store: {exc}") from exc
            self._local.worker = worker
            with self._lock:
                self._workers.append(worker)
        return worker

    def _drop_connection(self) -> None:
        worker: _Worker | None = getattr(self._local, "worker", None)
        self._local.worker = None
        if worker is not None:
            worker.discard()
            with self._lock:
                if worker in self._workers:
                    self._workers.remove(worker)

    def _prepare(self, statement: Executable) -> _Prepared:
        """Compile once per statement for this engine's dialect; executing the SQL string
        straight on the DBAPI cursor keeps SQLAlchemy's per-call overhead off the hot path."""
        prepared = self._prepared.get(statement)
        if prepared is None:
            element = cast(ClauseElement, statement)
            compiled = cast(SQLCompiler, element.compile(dialect=self.engine.dialect))
            prepared = _Prepared(compiled.string, compiled, tuple(compiled.positiontup or ()))
            self._prepared[statement] = prepared
        return prepared

    def _rows(self, statement: Executable, **params: Any) -> Sequence[Any]:
        """Run one query; on failure reconnect and retry once, then give up loudly."""
        prepared = self._prepare(statement)
        values = prepared.compiled.construct_params(params) or {}
        args: Any = tuple(values[key] for key in prepared.order) if prepared.order else values
        for attempt in (1, 2):
            try:
                worker = self._connection()
                worker.cursor.execute(prepared.sql, args)
                rows: Sequence[Any] = worker.cursor.fetchall()
                return rows
            except StoreUnavailable:
                self._drop_connection()
                if attempt == 2:
                    raise
            except Exception as exc:  # the DBAPI's own errors: sqlite3.Error, psycopg.Error
                self._drop_connection()
                if attempt == 2:
                    raise StoreUnavailable(f"store query failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close every worker's connection (call once the workers have stopped)."""
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.discard()

    # -- Postfix ---------------------------------------------------------------------------

    def is_domain(self, name: str) -> bool:
        return bool(self._rows(_DOMAIN, name=name))

    def alias_domain_target(self, name: str) -> str | None:
        rows = self._rows(_ALIAS_DOMAIN, name=name)
        return rows[0][0] if rows else None

    def is_mail_domain(self, name: str) -> bool:
        """Whether mail for `name` is taken here: a hosted domain or an alias domain."""
        return bool(self._rows(_MAIL_DOMAIN, name=name))

    def has_mailbox(self, address: str) -> bool:
        return bool(self._rows(_MAILBOX, address=address))

    def resolve(self, address: str) -> Resolution | None:
        """The first rule that matches `address` (see KIND_*), or None."""
        _, domain = split_address(address)
        rows = self._rows(_RESOLVE, address=address, catch_all="@" + domain, domain=domain)
        if not rows:
            return None
        kind = min(row[0] for row in rows)
        chosen = sorted((row for row in rows if row[0] == kind), key=lambda row: row[2])
        return Resolution(kind, tuple(row[1] for row in chosen), bool(chosen[0][3]))

    def catch_all(self, domain: str) -> list[str]:
        return [row[0] for row in self._rows(_CATCH_ALL, source="@" + domain)]

    def alias_targets(self, address: str) -> list[str] | None:
        """Postfix virtual_alias_maps: where mail for `address` goes, one level deep.

        A mailbox maps to itself, so a catch-all never swallows mail for real users; an
        address in an alias domain maps to the same local part in the target domain, but
        only if that address exists, so unknown recipients are still refused at RCPT.
        """
        found = self.resolve(address)
        if found is None:
            return None
        if found.kind != KIND_ALIAS_DOMAIN:
            return list(found.values)
        local, _ = split_address(address)
        rewritten = f"{local}@{found.values[0]}"
        again = self.resolve(rewritten)
        if again is None or again.kind == KIND_ALIAS_DOMAIN:
            return None
        return [rewritten]

    def sender_logins(self, address: str) -> list[str]:
        """Postfix smtpd_sender_login_maps: the enabled users who receive mail sent to
        `address` (through aliases, catch-alls and alias domains) may send as it."""
        owners: list[str] = []
        seen: set[str] = set()
        queue = [address]
        while queue and len(seen) < MAX_EXPANSION:
            current = queue.pop(0)
            if current in seen:
                continue
            seen.add(current)
            found = self.resolve(current)
            if found is None:
                continue
            if found.kind == KIND_MAILBOX:
                if found.enabled and current not in owners:
                    owners.append(current)
            elif found.kind == KIND_ALIAS_DOMAIN:
                local, _ = split_address(current)
                queue.append(f"{local}@{found.values[0]}")
            else:
                for target in found.values:
                    if target == current:
                        account = self.account(current)
                        if account is not None and account.enabled and current not in owners:
                            owners.append(current)
                    else:
                        queue.append(target)
        return owners

    # -- Dovecot ---------------------------------------------------------------------------

    def account(self, address: str) -> Account | None:
        rows = self._rows(_USER, address=address)
        if not rows:
            return None
        address, password_hash, quota, enabled, threshold, spam_filter, totp, sieve = rows[0]
        return Account(
            address,
            password_hash,
            quota,
            bool(enabled),
            threshold,
            bool(spam_filter),
            bool(totp),
            bool(sieve),
        )

    def app_password_hash(self, address: str, ident: str) -> str | None:
        """The hash of the enabled user's app password that starts with `ident`."""
        rows = self._rows(_APP_PASSWORD, address=address, ident=ident)
        return str(rows[0][0]) if rows else None

    def accounts(self) -> list[tuple[str, int | None]]:
        return [(row[0], row[1]) for row in self._rows(_ALL_USERS)]

    def active_script_id(self, address: str) -> str | None:
        rows = self._rows(_ACTIVE_SCRIPT, address=address)
        return f"{rows[0][0]}-{rows[0][1]}" if rows else None

    def named_script_id(self, address: str, name: str) -> str | None:
        rows = self._rows(_NAMED_SCRIPT, address=address, name=name)
        return f"{rows[0][0]}-{rows[0][1]}" if rows else None

    def script_data(self, address: str, data_id: str) -> str | None:
        """Script text by the id handed out above; the version part only busts caches."""
        script_id, _, _ = data_id.partition("-")
        if not script_id.isdigit() or len(script_id) > 18:
            return None
        rows = self._rows(_SCRIPT_DATA, address=address, id=int(script_id))
        return rows[0][0] if rows else None
