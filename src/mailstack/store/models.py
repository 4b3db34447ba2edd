"""The ORM classes of the service layer (`MailStore`), mapped onto the Core tables in
`tables`: the schema is written once, there.

Each class names its columns' types for the type checker; the columns themselves, their
defaults and constraints come from the table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import DeclarativeBase, Mapped, relationship

from mailstack.store import tables


class Base(DeclarativeBase):
    metadata = tables.metadata


class Domain(Base):
    __table__ = tables.domains

    id: Mapped[int]
    name: Mapped[str]
    created_at: Mapped[datetime]

    users: Mapped[list[User]] = relationship(back_populates="domain", passive_deletes=True)
    aliases: Mapped[list[Alias]] = relationship(back_populates="domain", passive_deletes=True)
    alias_domains: Mapped[list[AliasDomain]] = relationship(
        back_populates="target", passive_deletes=True
    )


class AliasDomain(Base):
    __table__ = tables.alias_domains

    id: Mapped[int]
    name: Mapped[str]
    target_id: Mapped[int]
    created_at: Mapped[datetime]

    target: Mapped[Domain] = relationship(back_populates="alias_domains")


class User(Base):
    __table__ = tables.users

    id: Mapped[int]
    domain_id: Mapped[int]
    address: Mapped[str]
    password_hash: Mapped[str]
    quota_bytes: Mapped[int | None]
    enabled: Mapped[bool]
    spam_threshold: Mapped[int | None]
    spam_filter: Mapped[bool]
    admin: Mapped[bool]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    domain: Mapped[Domain] = relationship(back_populates="users")
    scripts: Mapped[list[SieveScript]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class Alias(Base):
    __table__ = tables.aliases

    id: Mapped[int]
    domain_id: Mapped[int]
    source: Mapped[str]
    created_at: Mapped[datetime]

    domain: Mapped[Domain] = relationship(back_populates="aliases")
    targets: Mapped[list[AliasTarget]] = relationship(
        back_populates="alias",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="AliasTarget.id",
    )


class AliasTarget(Base):
    __table__ = tables.alias_targets

    id: Mapped[int]
    alias_id: Mapped[int]
    target: Mapped[str]

    alias: Mapped[Alias] = relationship(back_populates="targets")


class SieveScript(Base):
    __table__ = tables.sieve_scripts

    id: Mapped[int]
    user_id: Mapped[int]
    name: Mapped[str]
    content: Mapped[str]
    active: Mapped[bool]
    version: Mapped[int]
    updated_at: Mapped[datetime]

    user: Mapped[User] = relationship(back_populates="scripts")


class GreylistTriplet(Base):
    __table__ = tables.greylist_triplets

    key: Mapped[str]
    client_network: Mapped[str]
    sender: Mapped[str]
    recipient: Mapped[str]
    first_seen: Mapped[int]
    last_seen: Mapped[int]
    passed: Mapped[int]


class GreylistClient(Base):
    __table__ = tables.greylist_clients

    network: Mapped[str]
    successes: Mapped[int]
    last_seen: Mapped[int]


class GreylistAllow(Base):
    __table__ = tables.greylist_allow

    id: Mapped[int]
    kind: Mapped[str]
    value: Mapped[str]
    comment: Mapped[str | None]
    created_at: Mapped[datetime]


class ApiToken(Base):
    __table__ = tables.api_tokens

    id: Mapped[int]
    name: Mapped[str]
    token_hash: Mapped[str]
    user_id: Mapped[int | None]
    created_at: Mapped[datetime]


class AppPassword(Base):
    __table__ = tables.app_passwords

    id: Mapped[int]
    user_id: Mapped[int]
    name: Mapped[str]
    ident: Mapped[str]
    password_hash: Mapped[str]
    created_at: Mapped[datetime]


class UserTotp(Base):
    __table__ = tables.user_totp

    user_id: Mapped[int]
    secret: Mapped[str]
    enabled: Mapped[bool]
    last_step: Mapped[int | None]
    created_at: Mapped[datetime]
