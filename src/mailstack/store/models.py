"""The datastore schema: domains, alias domains, users, aliases, sieve scripts, and the
greylisting state (triplets, auto-allowed client networks, the administrators' allow list).

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
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Domain(Base):
    """A domain whose mail this server stores (Postfix virtual_mailbox_domains)."""

    __tablename__ = "domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    users: Mapped[list[User]] = relationship(back_populates="domain", passive_deletes=True)
    aliases: Mapped[list[Alias]] = relationship(back_populates="domain", passive_deletes=True)
    alias_domains: Mapped[list[AliasDomain]] = relationship(
        back_populates="target", passive_deletes=True
    )


class AliasDomain(Base):
    """Another name for a hosted domain: `x@alias` is delivered as `x@target`."""

    __tablename__ = "alias_domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    target: Mapped[Domain] = relationship(back_populates="alias_domains")


class User(Base):
    """A mailbox and the login that owns it."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    #: from this rspamd score on, mail goes to this user's Junk; None: the server's
    spam_threshold: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: False: spam is delivered to the Inbox like any mail (what the MX refuses stays refused)
    spam_filter: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    #: may use the web UI's admin pages (the CLI and admin API tokens do not depend on it)
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    domain: Mapped[Domain] = relationship(back_populates="users")
    scripts: Mapped[list[SieveScript]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class Alias(Base):
    """Mail for `source` (an address, or `@domain` for a catch-all) goes to the targets."""

    __tablename__ = "aliases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(254), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    domain: Mapped[Domain] = relationship(back_populates="aliases")
    targets: Mapped[list[AliasTarget]] = relationship(
        back_populates="alias",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="AliasTarget.id",
    )


class AliasTarget(Base):
    """One destination of an alias; any address, local or remote."""

    __tablename__ = "alias_targets"
    __table_args__ = (UniqueConstraint("alias_id", "target", name="uq_alias_targets_pair"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alias_id: Mapped[int] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(254))

    alias: Mapped[Alias] = relationship(back_populates="targets")


class SieveScript(Base):
    """A user's sieve script. At most one per user is active (a partial unique index).

    `version` grows on every change; the lookup service hands Dovecot `<id>-<version>` as
    the script's data id, so Dovecot's compiled-script cache is invalidated on each edit.
    """

    __tablename__ = "sieve_scripts"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_sieve_scripts_user_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    content: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship(back_populates="scripts")


Index(
    "uq_sieve_scripts_one_active",
    SieveScript.user_id,
    unique=True,
    sqlite_where=SieveScript.active,
    postgresql_where=SieveScript.active,
)


class GreylistTriplet(Base):
    """A greylisting triplet (mailstack.policy): client network, sender, recipient.

    `key` is the SHA-256 (hex) of `network/sender/recipient`, a fixed-size key whatever the
    addresses' length; the three parts are kept for administrators. Times are Unix seconds,
    so both databases compare and purge them with plain integer arithmetic. `first_seen`
    is the first attempt of the current round, `passed` the requests let through since.
    """

    __tablename__ = "greylist_triplets"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_network: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(512))
    recipient: Mapped[str] = mapped_column(String(512))
    first_seen: Mapped[int] = mapped_column(BigInteger)
    last_seen: Mapped[int] = mapped_column(BigInteger, index=True)
    passed: Mapped[int] = mapped_column(Integer, default=0)


class GreylistClient(Base):
    """A client network's successful greylisting retries; enough of them auto-allow it.
    `last_seen` (Unix seconds) is when the last one was counted."""

    __tablename__ = "greylist_clients"

    network: Mapped[str] = mapped_column(String(64), primary_key=True)
    successes: Mapped[int] = mapped_column(Integer)
    last_seen: Mapped[int] = mapped_column(BigInteger, index=True)


class GreylistAllow(Base):
    """An administrator's greylisting exception: a client `network` (`192.0.2.0/24`), a
    client host `domain` (the verified client name is it or under it), or a `recipient`
    (`user@domain`, `user@`, or a domain). Values are stored in canonical form
    (mailstack.policy.greylist.normalise_allow_entry) and matched exactly."""

    __tablename__ = "greylist_allow"
    __table_args__ = (
        UniqueConstraint("kind", "value", name="uq_greylist_allow_entry"),
        CheckConstraint("kind IN ('network', 'domain', 'recipient')", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(254))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(Base):
    """A bearer token of the admin REST API (mailstack.api). Only the SHA-256 (hex) of the
    token is stored; `user_id` NULL is an admin token, else the token acts for that user
    only and goes with the user."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AppPassword(Base):
    """A named extra password of a user for mail clients (IMAP, submission, ManageSieve),
    never for the web UI or the API. `ident` is the password's first characters, stored in
    plain: Dovecot's second passdb looks the one hash up by it (mailstack.store.apppasswords)."""

    __tablename__ = "app_passwords"
    __table_args__ = (
        UniqueConstraint("user_id", "name", name="uq_app_passwords_user_name"),
        UniqueConstraint("user_id", "ident", name="uq_app_passwords_user_ident"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    ident: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UserTotp(Base):
    """A user's TOTP second factor for the web UI. `enabled` is False while the user has not
    yet confirmed the secret with a code; `last_step` is the RFC 6238 time step of the last
    code accepted, so no code is accepted twice."""

    __tablename__ = "user_totp"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
