"""The datastore schema as SQLAlchemy Core tables: domains, alias domains, users, aliases,
sieve scripts, the greylisting state, API tokens, app passwords and TOTP secrets.

The lookup service and the greylisting policy query these tables directly, and so the
worker answers the mail daemons without loading SQLAlchemy's ORM (about 9 MiB); the ORM
classes in `models` are mapped onto the same tables, for the service layer.

Addresses and alias sources are stored whole (`local@domain`, `@domain`) next to their
domain foreign key, so that every lookup the mail daemons make is one indexed equality.
Changes to this file need a new migration in `migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are written in UTC and always read back time-zone aware (SQLite forgets)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC timestamp column")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _id() -> Column[int]:
    return Column("id", Integer, primary_key=True)


def _created_at() -> Column[datetime]:
    return Column("created_at", UTCDateTime(), nullable=False, default=utcnow)


def _key_of(
    name: str,
    table: str,
    *,
    index: bool = False,
    nullable: bool = False,
    primary_key: bool = False,
) -> Column[int]:
    """Column `name`, a foreign key to `table`'s id: its row goes with the row it names."""
    key = ForeignKey(f"{table}.id", ondelete="CASCADE")
    return Column(name, key, index=index, nullable=nullable, primary_key=primary_key)


#: A domain whose mail this server stores (Postfix virtual_mailbox_domains).
domains = Table(
    "domains",
    metadata,
    _id(),
    Column("name", String(253), nullable=False, unique=True),
    _created_at(),
)

#: Another name for a hosted domain: `x@alias` is delivered as `x@target`.
alias_domains = Table(
    "alias_domains",
    metadata,
    _id(),
    Column("name", String(253), nullable=False, unique=True),
    _key_of("target_id", "domains"),
    _created_at(),
)

#: A mailbox and the login that owns it. `spam_threshold`: from this rspamd score on, mail
#: goes to the user's Junk (NULL: the server's); `spam_filter` false: spam is delivered to
#: the Inbox like any mail (what the MX refuses stays refused); `admin`: may use the web
#: UI's admin pages (the CLI and admin API tokens do not depend on it).
users = Table(
    "users",
    metadata,
    _id(),
    _key_of("domain_id", "domains", index=True),
    Column("address", String(254), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("quota_bytes", BigInteger, nullable=True),
    Column("enabled", Boolean, nullable=False, default=True, server_default=true()),
    Column("spam_threshold", Integer, nullable=True),
    Column("spam_filter", Boolean, nullable=False, default=True, server_default=true()),
    Column("admin", Boolean, nullable=False, default=False, server_default=false()),
    _created_at(),
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
)

#: Mail for `source` (an address, or `@domain` for a catch-all) goes to the targets.
aliases = Table(
    "aliases",
    metadata,
    _id(),
    _key_of("domain_id", "domains", index=True),
    Column("source", String(254), nullable=False, unique=True),
    _created_at(),
)

#: One destination of an alias; any address, local or remote.
alias_targets = Table(
    "alias_targets",
    metadata,
    _id(),
    _key_of("alias_id", "aliases", index=True),
    Column("target", String(254), nullable=False),
    UniqueConstraint("alias_id", "target", name="uq_alias_targets_pair"),
)

#: A user's sieve script. At most one per user is active (a partial unique index).
#: `version` grows on every change; the lookup service hands Dovecot `<id>-<version>` as
#: the script's data id, so Dovecot's compiled-script cache is invalidated on each edit.
sieve_scripts = Table(
    "sieve_scripts",
    metadata,
    _id(),
    _key_of("user_id", "users"),
    Column("name", String(128), nullable=False),
    Column("content", Text, nullable=False),
    Column("active", Boolean, nullable=False, default=False, server_default=false()),
    Column("version", Integer, nullable=False, default=1),
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
    UniqueConstraint("user_id", "name", name="uq_sieve_scripts_user_name"),
)

Index(
    "uq_sieve_scripts_one_active",
    sieve_scripts.c.user_id,
    unique=True,
    sqlite_where=sieve_scripts.c.active,
    postgresql_where=sieve_scripts.c.active,
)

#: A greylisting triplet (mailstack.policy): client network, sender, recipient. `key` is
#: the SHA-256 (hex) of `network/sender/recipient`, a fixed-size key whatever the
#: addresses' length; the three parts are kept for administrators. Times are Unix seconds,
#: so both databases compare and purge them with plain integer arithmetic. `first_seen` is
#: the first attempt of the current round, `passed` the requests let through since.
greylist_triplets = Table(
    "greylist_triplets",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("client_network", String(64), nullable=False),
    Column("sender", String(512), nullable=False),
    Column("recipient", String(512), nullable=False),
    Column("first_seen", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False, index=True),
    Column("passed", Integer, nullable=False, default=0),
)

#: A client network's successful greylisting retries; enough of them auto-allow it.
#: `last_seen` (Unix seconds) is when the last one was counted.
greylist_clients = Table(
    "greylist_clients",
    metadata,
    Column("network", String(64), primary_key=True),
    Column("successes", Integer, nullable=False),
    Column("last_seen", BigInteger, nullable=False, index=True),
)

#: An administrator's greylisting exception: a client `network` (`192.0.2.0/24`), a client
#: host `domain` (the verified client name is it or under it), or a `recipient`
#: (`user@domain`, `user@`, or a domain). Values are stored in canonical form
#: (mailstack.policy.greylist.normalise_allow_entry) and matched exactly.
greylist_allow = Table(
    "greylist_allow",
    metadata,
    _id(),
    Column("kind", String(16), nullable=False),
    Column("value", String(254), nullable=False),
    Column("comment", Text, nullable=True),
    _created_at(),
    UniqueConstraint("kind", "value", name="uq_greylist_allow_entry"),
    CheckConstraint("kind IN ('network', 'domain', 'recipient')", name="kind"),
)

#: A bearer token of the admin REST API (mailstack.api). Only the SHA-256 (hex) of the
#: token is stored; `user_id` NULL is an admin token, else the token acts for that user
#: only and goes with the user.
api_tokens = Table(
    "api_tokens",
    metadata,
    _id(),
    Column("name", String(64), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    _key_of("user_id", "users", index=True, nullable=True),
    _created_at(),
)

#: A named extra password of a user for mail clients (IMAP, submission, ManageSieve),
#: never for the web UI or the API. `ident` is the password's first characters, stored in
#: plain: Dovecot's second passdb looks the one hash up by it (mailstack.store.apppasswords).
app_passwords = Table(
    "app_passwords",
    metadata,
    _id(),
    _key_of("user_id", "users"),
    Column("name", String(64), nullable=False),
    Column("ident", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    _created_at(),
    UniqueConstraint("user_id", "name", name="uq_app_passwords_user_name"),
    UniqueConstraint("user_id", "ident", name="uq_app_passwords_user_ident"),
)

#: A user's TOTP second factor for the web UI. `enabled` is false while the user has not
#: yet confirmed the secret with a code; `last_step` is the RFC 6238 time step of the last
#: code accepted, so no code is accepted twice.
user_totp = Table(
    "user_totp",
    metadata,
    _key_of("user_id", "users", primary_key=True),
    Column("secret", String(64), nullable=False),
    Column("enabled", Boolean, nullable=False, default=False, server_default=false()),
    Column("last_step", BigInteger, nullable=True),
    _created_at(),
)
