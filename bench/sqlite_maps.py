"""The same mail data in mailstack's store and in a plain SQLite file for hand-written setups.

The benchmarks compare mailstack with Postfix's own `sqlite:` tables and Dovecot's `sql`
passdb/userdb (Debian's postfix-sqlite and dovecot-sqlite). This module holds the data, fills
both sides, and writes the `sqlite:` map files and the Dovecot `sql` file whose queries give
the answers of mailstack's socketmap maps and dict lookups (see lookup/maps.py, resolver.py
and dictserver.py); bench/lookup_bench.py checks that the two sides answer every key alike.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailstack.lookup.maps import HOSTED_SENDER_REJECT
from mailstack.store import MailStore


@dataclass
class Dataset:
    """Everything both sides hold, in canonical (lower-case) form."""

    domains: list[str]
    alias_domains: dict[str, str]  # alias domain -> hosted domain
    users: list[tuple[str, bool]]  # address, enabled
    aliases: dict[str, list[str]] = field(default_factory=dict)  # source (or @domain) -> targets


def fill_store(path: Path, data: Dataset, password_hash: str) -> float:
    """Load the data through the store's service layer, every user with `password_hash`;
    returns the seconds it took."""
    begin = time.monotonic()
    store = MailStore.open(path)
    try:
        for name in data.domains:
            store.add_domain(name)
        for name, target in data.alias_domains.items():
            store.add_alias_domain(name, target)
        for address, enabled in data.users:
            store.add_user(address, password_hash=password_hash, enabled=enabled)
        for source, targets in data.aliases.items():
            store.add_alias(source, targets)
    finally:
        store.close()
    return time.monotonic() - begin


PLAIN_SCHEMA = """
CREATE TABLE domains (name TEXT PRIMARY KEY);
CREATE TABLE alias_domains (name TEXT PRIMARY KEY, target TEXT NOT NULL);
CREATE TABLE mailboxes (address TEXT PRIMARY KEY, enabled INTEGER NOT NULL, password TEXT);
CREATE TABLE aliases (source TEXT NOT NULL, target TEXT NOT NULL, PRIMARY KEY (source, target));
"""


def build_plain(path: Path, data: Dataset, password_hash: str) -> None:
    """The same data in the simple schema a hand-written Postfix + Dovecot setup would use."""
    db = sqlite3.connect(path)
    try:
        db.executescript(PLAIN_SCHEMA)
        db.executemany("INSERT INTO domains VALUES (?)", [(d,) for d in data.domains])
        db.executemany("INSERT INTO alias_domains VALUES (?, ?)", data.alias_domains.items())
        db.executemany(
            "INSERT INTO mailboxes VALUES (?, ?, ?)",
            [(address, enabled, password_hash) for address, enabled in data.users],
        )
        db.executemany(
            "INSERT INTO aliases VALUES (?, ?)",
            [(s, t) for s, targets in data.aliases.items() for t in targets],
        )
        db.commit()
        db.execute("ANALYZE")
    finally:
        db.close()


# Postfix's sqlite_table(5) queries giving the lookup service's answers (see maps.py and
# resolver.py). Written as a hand-written setup would be: short queries, and a list of
# tables where Postfix's "first table that has the key wins" gives the precedence (as in
# `virtual_alias_maps = sqlite:a.cf, sqlite:b.cf`). Postfix prepares every query on every
# lookup, so long queries cost more than their plan suggests. '%s' is the SQL-quoted key,
# %u/%d its local and domain part (the query is skipped when the part is empty).
_DOM = "substr({a}, instr({a}, '@') + 1)"
_HAS_ALIAS = "EXISTS (SELECT 1 FROM aliases WHERE source = {a})"
_HAS_BOX = "EXISTS (SELECT 1 FROM mailboxes WHERE address = {a})"
_HAS_CATCH = "EXISTS (SELECT 1 FROM aliases WHERE source = '@' || " + _DOM + ")"  # noqa: S608
_W = "w.address"

SQLITE_QUERIES: dict[str, tuple[str, ...]] = {
    "domain": ("SELECT name FROM domains WHERE name = '%s'",),
    "aliasdomain": ("SELECT target FROM alias_domains WHERE name = '%s'",),
    "mailbox": ("SELECT address FROM mailboxes WHERE address = '%s'",),
    # An alias, else a mailbox maps to itself, else the catch-all, else the same local
    # part in the alias domain's target, if that address exists.
    "alias": (
        "SELECT target FROM aliases WHERE source = '%s'",
        "SELECT address FROM mailboxes WHERE address = '%s'",
        "SELECT target FROM aliases WHERE source = '@%d'",
        "SELECT '%u@' || d.target FROM alias_domains AS d WHERE d.name = '%d' AND ("
        "EXISTS (SELECT 1 FROM aliases WHERE source = '%u@' || d.target) "
        "OR EXISTS (SELECT 1 FROM mailboxes WHERE address = '%u@' || d.target) "
        "OR EXISTS (SELECT 1 FROM aliases WHERE source = '@' || d.target))",
    ),
    # Whoever receives mail for the address may send as it: walk aliases, catch-alls and
    # alias domains (a recursive CTE, SQLite >= 3.34), keep the enabled mailboxes reached.
    "senderlogin": (
        "WITH RECURSIVE walk(address) AS (SELECT '%s' WHERE instr('%s', '@') > 1 "  # noqa: S608
        "UNION SELECT a.target FROM walk AS w JOIN aliases AS a ON a.source = w.address "
        "WHERE a.target <> w.address "
        f"UNION SELECT a.target FROM walk AS w JOIN aliases AS a ON a.source = '@' || "
        f"{_DOM.format(a=_W)} WHERE a.target <> w.address "
        f"AND NOT {_HAS_ALIAS.format(a=_W)} AND NOT {_HAS_BOX.format(a=_W)} "
        "UNION SELECT substr(w.address, 1, instr(w.address, '@')) || d.target "
        f"FROM walk AS w JOIN alias_domains AS d ON d.name = {_DOM.format(a=_W)} "
        f"WHERE NOT {_HAS_ALIAS.format(a=_W)} AND NOT {_HAS_BOX.format(a=_W)} "
        f"AND NOT {_HAS_CATCH.format(a=_W)}) "
        # EXISTS, not a join: a join makes SQLite build a Bloom filter over all mailboxes.
        "SELECT address FROM walk AS w WHERE EXISTS (SELECT 1 FROM mailboxes AS m "
        "WHERE m.address = w.address AND m.enabled) AND (NOT "
        f"{_HAS_ALIAS.format(a=_W)} OR EXISTS "
        "(SELECT 1 FROM aliases WHERE source = w.address AND target = w.address))",
    ),
    # The MX's access action for envelope senders in a hosted or alias domain; only full
    # addresses (the %u makes Postfix skip the bare-domain and `local@` lookups).
    "hostedsender": (
        f"SELECT '{HOSTED_SENDER_REJECT}' WHERE '%u' <> '' AND EXISTS ("  # noqa: S608
        "SELECT 1 FROM domains WHERE name = '%d' "
        "UNION ALL SELECT 1 FROM alias_domains WHERE name = '%d')",
    ),
}


def write_map_files(folder: Path, db: Path) -> dict[str, list[str]]:
    """`sqlite:` map files; returns map name -> the Postfix tables, in lookup order."""
    tables: dict[str, list[str]] = {}
    for name, queries in SQLITE_QUERIES.items():
        for i, query in enumerate(queries):
            path = folder / f"sqlite-{name}-{i}.cf"
            path.write_text(f"dbpath = {db}\nquery = {query}\n")
            tables.setdefault(name, []).append(f"sqlite:{path}")
    return tables


def dovecot_sql_conf(db: Path) -> str:
    """Dovecot's `sql` passdb/userdb file (driver sqlite) on the same file, answering as
    mailstack's dict does: enabled mailboxes log in with their hash; the userdb knows every
    mailbox and gives only the user (the home comes from mail_home)."""
    return (  # Dovecot's own templates: it escapes %u
        f"driver = sqlite\nconnect = {db}\ndefault_pass_scheme = ARGON2ID\n"  # noqa: S608
        "password_query = SELECT address AS user, password FROM mailboxes "
        "WHERE address = '%u' AND enabled\n"
        "user_query = SELECT address AS user FROM mailboxes WHERE address = '%u'\n"
        "iterate_query = SELECT address AS user FROM mailboxes\n"
    )
