"""The one service layer through which every change to the datastore goes.

The CLI, the admin API and the web UI call `MailStore`; nothing else writes. Each method is
one transaction, validates and normalises its input first (raising `InvalidInput` naming the
argument), and returns plain frozen dataclasses, never ORM objects, so callers cannot
half-change a row by accident. Lookups by the mail daemons do not come through here: the
lookup service reads the same tables with lean queries of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from mailstack import names
from mailstack.sieve import MAX_SCRIPT_BYTES
from mailstack.store import passwords, tokens
from mailstack.store.errors import Conflict, Forbidden, InvalidInput, NotFound, StoreUnavailable
from mailstack.store.models import (
    Alias,
    AliasDomain,
    AliasTarget,
    ApiToken,
    Domain,
    SieveScript,
    User,
)
from mailstack.store.tokens import TokenInfo

if TYPE_CHECKING:
    import os

    from sqlalchemy import Engine

#: Compiles a Sieve script: None when it is valid, else the compiler's errors, one a line.
Checker = Callable[[str], "str | None"]

#: Addresses only administrators may give out: RFC 2142's role mailboxes, where DMARC and
#: TLS reports and abuse complaints go, and those a certificate authority may mail to prove
#: control of the domain (CA/Browser Forum baseline requirements, 3.2.2.4.4).
ROLE_LOCAL_PARTS = frozenset(
    {
        "abuse",
        "admin",
        "administrator",
        "hostmaster",
        "mailer-daemon",
        "noc",
        "postmaster",
        "root",
        "security",
        "webmaster",
    }
)

MAX_ALIAS_TARGETS = 1000

#: A token's name, its user's address (None: an admin token) and its creation time.
_TOKEN_ROWS = select(ApiToken.name, User.address, ApiToken.created_at).outerjoin(
    User, ApiToken.user_id == User.id
)

_SIZE = re.compile(r"(?i)\s*(\d+)\s*([kmgt]?)i?b?\s*")
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True)
class DomainInfo:
    name: str
    users: int
    aliases: int
    alias_domains: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class AliasDomainInfo:
    name: str
    target: str


@dataclass(frozen=True)
class SpamSettings:
    """A user's spam filing: their own threshold (None: the server's) and on or off."""

    address: str
    threshold: int | None
    filter: bool


class Unchanged:
    """A keyword not given: keep the stored value (None is a value: "the default")."""


UNCHANGED = Unchanged()
#: rspamd's scores for real mail stay well below this
MAX_SPAM_THRESHOLD = 1000


@dataclass(frozen=True)
class UserInfo:
    """A mailbox as shown to administrators: never includes the password hash."""

    address: str
    quota_bytes: int | None
    enabled: bool
    created_at: datetime
    admin: bool = False  # may use the web UI's admin pages

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @classmethod
    def of(cls, user: User) -> UserInfo:
        return cls(user.address, user.quota_bytes, user.enabled, user.created_at, user.admin)


@dataclass(frozen=True)
class AliasInfo:
    source: str
    targets: tuple[str, ...]

    @property
    def catch_all(self) -> bool:
        return self.source.startswith("@")

    @property
    def domain(self) -> str:
        return self.source.rpartition("@")[2]


@dataclass(frozen=True)
class ScriptInfo:
    name: str
    active: bool
    size: int
    version: int
    updated_at: datetime
    content: str | None = None


def parse_quota(value: str | int | None, field: str = "quota") -> int | None:
    """`None`, 0 or "" mean unlimited; otherwise bytes, from an int or "512M"/"2G"/"1GiB"."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise InvalidInput(field, "must be a size such as 500M or 2G")
    if isinstance(value, int):
        if value < 0:
            raise InvalidInput(field, "must not be negative")
        return value
    match = _SIZE.fullmatch(value)
    if match is None:
        raise InvalidInput(field, f"{value!r} is not a size such as 500M or 2G")
    size = int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]
    return size or None


class MailStore:
    """Domains, users, aliases and sieve scripts: reads for admins, and every write."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | os.PathLike[str] | None = None) -> MailStore:
        """Create the engine for `url` (see `engine.database_url`) and migrate to head."""
        from mailstack.store.engine import open_engine

        return cls(open_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """One session, one transaction; database errors become typed store errors."""
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError as exc:
            raise Conflict(f"the change conflicts with existing data: {exc.orig}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc.orig, OSError):
                raise StoreUnavailable(f"database unreachable: {exc.orig}") from exc
            raise StoreUnavailable(f"database error: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc

    def transaction(self) -> AbstractContextManager[Session]:
        """One transaction with the same error mapping, for the service modules beside this
        one (`mailstack.store.security`)."""
        return self._transaction()

    # -- lookups shared by the write methods ------------------------------------------------

    @staticmethod
    def _domain(session: Session, name: str) -> Domain:
        domain = session.scalar(select(Domain).where(Domain.name == name))
        if domain is None:
            raise NotFound(f"domain {name} is not hosted here")
        return domain

    @staticmethod
    def _user(session: Session, address: str) -> User:
        user = session.scalar(select(User).where(User.address == address))
        if user is None:
            raise NotFound(f"user {address} does not exist")
        return user

    @staticmethod
    def _alias(session: Session, source: str) -> Alias:
        alias = session.scalar(
            select(Alias).options(selectinload(Alias.targets)).where(Alias.source == source)
        )
        if alias is None:
            raise NotFound(f"alias {source} does not exist")
        return alias

    @staticmethod
    def _script(session: Session, user: User, name: str) -> SieveScript:
        script = session.scalar(
            select(SieveScript).where(SieveScript.user_id == user.id, SieveScript.name == name)
        )
        if script is None:
            raise NotFound(f"sieve script {name!r} of {user.address} does not exist")
        return script

    # -- domains ----------------------------------------------------------------------------

    def add_domain(self, name: str) -> DomainInfo:
        """Host a new domain; it must not already be a domain or an alias domain."""
        domain_name = names.normalise_domain(name)
        with self._transaction() as session:
            if session.scalar(select(Domain.id).where(Domain.name == domain_name)) is not None:
                raise Conflict(f"domain {domain_name} already exists")
            if session.scalar(select(AliasDomain.id).where(AliasDomain.name == domain_name)):
                raise Conflict(f"{domain_name} is already an alias domain")
            domain = Domain(name=domain_name)
            session.add(domain)
            session.flush()
            return DomainInfo(domain_name, 0, 0, (), domain.created_at)

    def list_domains(self) -> list[DomainInfo]:
        with self._transaction() as session:
            users = dict(
                session.execute(select(User.domain_id, func.count()).group_by(User.domain_id)).all()
            )
            aliases = dict(
                session.execute(
                    select(Alias.domain_id, func.count()).group_by(Alias.domain_id)
                ).all()
            )
            alias_domains: dict[int, list[str]] = {}
            for alias_domain in session.scalars(select(AliasDomain).order_by(AliasDomain.name)):
                alias_domains.setdefault(alias_domain.target_id, []).append(alias_domain.name)
            return [
                DomainInfo(
                    d.name,
                    users.get(d.id, 0),
                    aliases.get(d.id, 0),
                    tuple(alias_domains.get(d.id, ())),
                    d.created_at,
                )
                for d in session.scalars(select(Domain).order_by(Domain.name))
            ]

    def remove_domain(self, name: str, *, cascade: bool = False) -> None:
        """Stop hosting a domain. Refuses while it has users, aliases or alias domains,
        unless `cascade` is set, so that a typo cannot delete mailboxes' logins."""
        domain_name = names.normalise_domain(name)
        with self._transaction() as session:
            domain = self._domain(session, domain_name)
            counts = {
                "users": session.scalar(
                    select(func.count()).select_from(User).where(User.domain_id == domain.id)
                ),
                "aliases": session.scalar(
                    select(func.count()).select_from(Alias).where(Alias.domain_id == domain.id)
                ),
                "alias domains": session.scalar(
                    select(func.count())
                    .select_from(AliasDomain)
                    .where(AliasDomain.target_id == domain.id)
                ),
            }
            in_use = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
            if in_use and not cascade:
                raise Conflict(
                    f"domain {domain_name} still has {in_use}; remove them first "
                    "or remove the domain with cascade"
                )
            session.delete(domain)

    # -- alias domains ----------------------------------------------------------------------

    def add_alias_domain(self, name: str, target: str) -> AliasDomainInfo:
        """Make `name` another name of the hosted domain `target`."""
        alias_name = names.normalise_domain(name, "name")
        target_name = names.normalise_domain(target, "target")
        with self._transaction() as session:
            domain = self._domain(session, target_name)
            if session.scalar(select(Domain.id).where(Domain.name == alias_name)) is not None:
                raise Conflict(f"{alias_name} is a hosted domain; it cannot also be an alias")
            if session.scalar(select(AliasDomain.id).where(AliasDomain.name == alias_name)):
                raise Conflict(f"alias domain {alias_name} already exists")
            session.add(AliasDomain(name=alias_name, target=domain))
            return AliasDomainInfo(alias_name, target_name)

    def list_alias_domains(self) -> list[AliasDomainInfo]:
        with self._transaction() as session:
            rows = session.execute(
                select(AliasDomain.name, Domain.name)
                .join(Domain, AliasDomain.target_id == Domain.id)
                .order_by(AliasDomain.name)
            )
            return [AliasDomainInfo(alias, target) for alias, target in rows]

    def remove_alias_domain(self, name: str) -> None:
        alias_name = names.normalise_domain(name, "name")
        with self._transaction() as session:
            alias = session.scalar(select(AliasDomain).where(AliasDomain.name == alias_name))
            if alias is None:
                raise NotFound(f"alias domain {alias_name} does not exist")
            session.delete(alias)

    # -- users ------------------------------------------------------------------------------

    def add_user(
        self,
        address: str,
        password: str | None = None,
        *,
        password_hash: str | None = None,
        quota: str | int | None = None,
        enabled: bool = True,
        admin: bool = False,
    ) -> UserInfo:
        """Create a mailbox in a hosted domain, from a password or an existing hash;
        `admin` lets it use the web UI's admin pages."""
        canonical = names.normalise_address(address)
        if (password is None) == (password_hash is None):
            raise InvalidInput("password", "give either a password or a password hash")
        stored = (
            passwords.hash_password(password)
            if password is not None
            else passwords.check_imported_hash(password_hash or "")
        )
        quota_bytes = parse_quota(quota)
        _, domain_name = names.split_address(canonical)
        with self._transaction() as session:
            domain = self._domain(session, domain_name)
            if session.scalar(select(User.id).where(User.address == canonical)) is not None:
                raise Conflict(f"user {canonical} already exists")
            user = User(
                domain=domain,
                address=canonical,
                password_hash=stored,
                quota_bytes=quota_bytes,
                enabled=enabled,
                admin=admin,
            )
            session.add(user)
            session.flush()
            return UserInfo.of(user)

    def get_user(self, address: str) -> UserInfo:
        canonical = names.normalise_address(address)
        with self._transaction() as session:
            return UserInfo.of(self._user(session, canonical))

    def list_users(self, domain: str | None = None) -> list[UserInfo]:
        query = select(User).order_by(User.address)
        with self._transaction() as session:
            if domain is not None:
                query = query.where(
                    User.domain_id == self._domain(session, names.normalise_domain(domain)).id
                )
            return [UserInfo.of(u) for u in session.scalars(query)]

    def set_password(self, address: str, password: str) -> None:
        canonical = names.normalise_address(address)
        stored = passwords.hash_password(password)
        with self._transaction() as session:
            self._user(session, canonical).password_hash = stored

    def verify_password(self, address: str, password: str) -> bool:
        """True if the user exists, is enabled and the password matches."""
        canonical = names.try_address(address)
        stored = None
        if canonical is not None:
            with self._transaction() as session:
                user = session.scalar(select(User).where(User.address == canonical))
                if user is not None and user.enabled:
                    stored = user.password_hash
        if stored is None:
            passwords.spend_verification_time(password)
            return False
        return passwords.verify_password(stored, password)

    def set_quota(self, address: str, quota: str | int | None) -> UserInfo:
        canonical = names.normalise_address(address)
        quota_bytes = parse_quota(quota)
        with self._transaction() as session:
            user = self._user(session, canonical)
            user.quota_bytes = quota_bytes
            return UserInfo.of(user)

    def set_admin(self, address: str, admin: bool) -> UserInfo:
        """Let the user use the web UI's admin pages, or no longer."""
        canonical = names.normalise_address(address)
        with self._transaction() as session:
            user = self._user(session, canonical)
            user.admin = admin
            return UserInfo.of(user)

    def _set_enabled(self, address: str, enabled: bool) -> None:
        canonical = names.normalise_address(address)
        with self._transaction() as session:
            self._user(session, canonical).enabled = enabled

    def disable_user(self, address: str) -> None:
        """Refuse logins (IMAP, submission, ManageSieve). Mail is still accepted and
        delivered, so a suspended account loses nothing; remove the user to stop mail."""
        self._set_enabled(address, False)

    def enable_user(self, address: str) -> None:
        self._set_enabled(address, True)

    def set_spam(
        self,
        address: str,
        *,
        threshold: int | Unchanged | None = UNCHANGED,
        enabled: bool | None = None,
    ) -> SpamSettings:
        """The user's own junk threshold (None: the server's) and whether spam goes to
        their Junk folder; what is not given stays as it is."""
        canonical = names.normalise_address(address)
        if isinstance(threshold, int) and not 0 <= threshold <= MAX_SPAM_THRESHOLD:
            raise InvalidInput("threshold", f"must be 0 to {MAX_SPAM_THRESHOLD} (got {threshold})")
        with self._transaction() as session:
            user = self._user(session, canonical)
            if not isinstance(threshold, Unchanged):
                user.spam_threshold = threshold
            if enabled is not None:
                user.spam_filter = enabled
            return SpamSettings(user.address, user.spam_threshold, user.spam_filter)

    def spam_settings(self, address: str) -> SpamSettings:
        canonical = names.normalise_address(address)
        with self._transaction() as session:
            user = self._user(session, canonical)
            return SpamSettings(user.address, user.spam_threshold, user.spam_filter)

    def remove_user(self, address: str) -> None:
        """Delete the login and its sieve scripts. The mail on disk is left to the admin."""
        canonical = names.normalise_address(address)
        with self._transaction() as session:
            session.delete(self._user(session, canonical))

    # -- aliases ----------------------------------------------------------------------------

    def add_alias(self, source: str, targets: str | Sequence[str]) -> AliasInfo:
        """Send mail for `source` (an address, or `@domain` for a catch-all) to `targets`.

        Adding to an existing alias appends the new targets; a target already there is a
        Conflict only when nothing new would be added.
        """
        canonical = names.normalise_alias_source(source)
        wanted = self._targets(targets)
        _, domain_name = names.split_address(canonical)
        with self._transaction() as session:
            domain = self._domain(session, domain_name)
            alias = session.scalar(
                select(Alias).options(selectinload(Alias.targets)).where(Alias.source == canonical)
            )
            if alias is None:
                alias = Alias(domain=domain, source=canonical)
                session.add(alias)
            existing = {t.target for t in alias.targets}
            new = [t for t in wanted if t not in existing]
            if not new:
                raise Conflict(f"alias {canonical} already has every target given")
            if len(existing) + len(new) > MAX_ALIAS_TARGETS:
                raise InvalidInput("targets", f"an alias can have at most {MAX_ALIAS_TARGETS}")
            alias.targets.extend(AliasTarget(target=t) for t in new)
            session.flush()
            return AliasInfo(canonical, tuple(t.target for t in alias.targets))

    @staticmethod
    def _targets(targets: str | Sequence[str]) -> list[str]:
        items = [targets] if isinstance(targets, str) else list(targets)
        if not items:
            raise InvalidInput("targets", "give at least one target address")
        result: list[str] = []
        for item in items:
            target = names.normalise_address(item, "targets")
            if target not in result:
                result.append(target)
        return result

    def list_aliases(self, domain: str | None = None) -> list[AliasInfo]:
        query = select(Alias).options(selectinload(Alias.targets)).order_by(Alias.source)
        with self._transaction() as session:
            if domain is not None:
                query = query.where(
                    Alias.domain_id == self._domain(session, names.normalise_domain(domain)).id
                )
            return [
                AliasInfo(a.source, tuple(t.target for t in a.targets))
                for a in session.scalars(query)
            ]

    def remove_alias(self, source: str, targets: str | Sequence[str] | None = None) -> None:
        """Remove the whole alias, or only some of its targets (the alias goes with the last)."""
        canonical = names.normalise_alias_source(source)
        unwanted = None if targets is None else self._targets(targets)
        with self._transaction() as session:
            alias = self._alias(session, canonical)
            if unwanted is None:
                session.delete(alias)
                return
            present = {t.target: t for t in alias.targets}
            missing = [t for t in unwanted if t not in present]
            if missing:
                raise NotFound(f"alias {canonical} has no target {', '.join(missing)}")
            for target in unwanted:
                alias.targets.remove(present[target])
            if not alias.targets:
                session.delete(alias)

    # -- sieve scripts ----------------------------------------------------------------------

    def put_script(
        self,
        address: str,
        name: str,
        content: str,
        *,
        activate: bool = False,
        checker: Checker | None = None,
    ) -> ScriptInfo:
        """Create or replace a script (ManageSieve PUTSCRIPT), optionally making it active.

        With `checker` (the CLI and the API pass `mailstack.sieve.check_script`) a script
        that does not compile is refused before anything is stored.
        """
        canonical = names.normalise_address(address)
        script_name = names.validate_script_name(name)
        size = len(content.encode("utf-8", errors="strict"))
        if size > MAX_SCRIPT_BYTES:
            raise InvalidInput("content", f"is {size} bytes; the limit is {MAX_SCRIPT_BYTES}")
        if "\x00" in content:
            raise InvalidInput("content", "must not contain NUL characters")
        if checker is not None:
            self._check_script(checker, script_name, content)
        with self._transaction() as session:
            user = self._user(session, canonical)
            script = session.scalar(
                select(SieveScript).where(
                    SieveScript.user_id == user.id, SieveScript.name == script_name
                )
            )
            if script is None:
                script = SieveScript(user=user, name=script_name, content=content, version=1)
                session.add(script)
            else:
                script.content = content
                script.version += 1
            session.flush()
            if activate:
                self._activate(session, user, script)
            return self._script_info(script, with_content=False)

    @staticmethod
    def _check_script(checker: Checker, name: str, content: str) -> None:
        from mailstack.sieve.check import SieveCheckUnavailable

        try:
            problem = checker(content)
        except SieveCheckUnavailable as exc:
            raise SieveCheckUnavailable(
                f"cannot check the script, so it was not stored: {exc}"
            ) from None
        if problem is not None:
            raise InvalidInput(
                "content",
                f"sieve script {name!r} does not compile, nothing stored: "
                + problem.replace("\n", "; "),
            )

    @staticmethod
    def _script_info(script: SieveScript, *, with_content: bool) -> ScriptInfo:
        return ScriptInfo(
            script.name,
            script.active,
            len(script.content.encode("utf-8")),
            script.version,
            script.updated_at,
            script.content if with_content else None,
        )

    def get_script(self, address: str, name: str) -> ScriptInfo:
        canonical = names.normalise_address(address)
        with self._transaction() as session:
            user = self._user(session, canonical)
            return self._script_info(self._script(session, user, name), with_content=True)

    def list_scripts(self, address: str) -> list[ScriptInfo]:
        canonical = names.normalise_address(address)
        with self._transaction() as session:
            user = self._user(session, canonical)
            scripts = session.scalars(
                select(SieveScript).where(SieveScript.user_id == user.id).order_by(SieveScript.name)
            )
            return [self._script_info(s, with_content=False) for s in scripts]

    @staticmethod
    def _activate(session: Session, user: User, script: SieveScript | None) -> None:
        for other in session.scalars(
            select(SieveScript).where(SieveScript.user_id == user.id, SieveScript.active)
        ):
            if other is not script:
                other.active = False
                other.version += 1
        session.flush()  # the one-active index must never see two at once
        if script is not None and not script.active:
            script.active = True
            script.version += 1

    def activate_script(self, address: str, name: str | None) -> None:
        """Make `name` the active script (ManageSieve SETACTIVE); None deactivates all."""
        canonical = names.normalise_address(address)
        with self._transaction() as session:
            user = self._user(session, canonical)
            script = None if name is None else self._script(session, user, name)
            self._activate(session, user, script)

    def rename_script(self, address: str, name: str, new_name: str) -> None:
        canonical = names.normalise_address(address)
        target = names.validate_script_name(new_name, "new_name")
        with self._transaction() as session:
            user = self._user(session, canonical)
            script = self._script(session, user, name)
            if target != name and session.scalar(
                select(SieveScript.id).where(
                    SieveScript.user_id == user.id, SieveScript.name == target
                )
            ):
                raise Conflict(f"sieve script {target!r} of {canonical} already exists")
            script.name = target
            script.version += 1

    def remove_script(self, address: str, name: str) -> None:
        """Delete a script. The active one is refused, as ManageSieve's DELETESCRIPT does."""
        canonical = names.normalise_address(address)
        with self._transaction() as session:
            user = self._user(session, canonical)
            script = self._script(session, user, name)
            if script.active:
                raise Conflict(
                    f"sieve script {name!r} of {canonical} is active; deactivate it first"
                )
            session.delete(script)

    # -- a user's own aliases (what a user's API token may do) ------------------------------

    def aliases_delivering_to(self, address: str) -> list[AliasInfo]:
        """The aliases that have `address` among their targets."""
        canonical = names.normalise_address(address)
        query = (
            select(Alias)
            .options(selectinload(Alias.targets))
            .where(
                Alias.id.in_(select(AliasTarget.alias_id).where(AliasTarget.target == canonical))
            )
            .order_by(Alias.source)
        )
        with self._transaction() as session:
            return [
                AliasInfo(a.source, tuple(t.target for t in a.targets))
                for a in session.scalars(query)
            ]

    def add_own_alias(self, address: str, source: str) -> AliasInfo:
        """A user's own alias: a new address in their domain that delivers to them alone.

        Catch-alls, other domains, role addresses (`ROLE_LOCAL_PARTS`), and a source that
        is already an alias or a user are refused: a user must not be able to take mail
        meant for someone else, nor the mail that proves control of the domain.
        """
        owner = names.normalise_address(address)
        canonical = names.normalise_alias_source(source)
        if canonical.startswith("@"):
            raise Forbidden("only an administrator may add a catch-all alias")
        local, domain = names.split_address(canonical)
        owner_domain = names.split_address(owner)[1]
        if domain != owner_domain:
            raise Forbidden(f"a user may only add aliases in their own domain {owner_domain}")
        if local.split("+", 1)[0] in ROLE_LOCAL_PARTS:
            raise Forbidden(f"only an administrator may give out the role address {canonical}")
        with self._transaction() as session:
            user = self._user(session, owner)
            if session.scalar(select(User.id).where(User.address == canonical)) is not None:
                raise Conflict(f"{canonical} is a user's address")
            if session.scalar(select(Alias.id).where(Alias.source == canonical)) is not None:
                raise Conflict(f"alias {canonical} already exists")
            alias = Alias(domain_id=user.domain_id, source=canonical)
            alias.targets.append(AliasTarget(target=owner))
            session.add(alias)
            return AliasInfo(canonical, (owner,))

    def leave_alias(self, address: str, source: str) -> None:
        """Stop an alias delivering to the user (the alias goes with its last target); an
        alias that does not deliver to them is not theirs to change."""
        owner = names.normalise_address(address)
        canonical = names.normalise_alias_source(source)
        with self._transaction() as session:
            alias = self._alias(session, canonical)
            mine = [t for t in alias.targets if t.target == owner]
            if not mine:
                raise Forbidden(f"alias {canonical} does not deliver to {owner}")
            alias.targets.remove(mine[0])
            if not alias.targets:
                session.delete(alias)

    # -- API tokens -------------------------------------------------------------------------

    def create_token(self, name: str, user: str | None = None) -> tuple[TokenInfo, str]:
        """A new bearer token, returned once in plain; only its hash is stored. Without
        `user` it is an admin token, else it acts for that user only."""
        token_name = tokens.validate_token_name(name)
        owner = None if user is None else names.normalise_address(user, "user")
        secret = tokens.new_token()
        with self._transaction() as session:
            if session.scalar(select(ApiToken.id).where(ApiToken.name == token_name)):
                raise Conflict(f"token {token_name} already exists")
            user_id = None if owner is None else self._user(session, owner).id
            row = ApiToken(name=token_name, token_hash=tokens.hash_token(secret), user_id=user_id)
            session.add(row)
            session.flush()
            return TokenInfo(token_name, owner, row.created_at), secret

    def list_tokens(self) -> list[TokenInfo]:
        with self._transaction() as session:
            rows = session.execute(_TOKEN_ROWS.order_by(ApiToken.name))
            return [TokenInfo(name, user, created) for name, user, created in rows]

    def revoke_token(self, name: str) -> None:
        token_name = tokens.validate_token_name(name)
        with self._transaction() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.name == token_name))
            if row is None:
                raise NotFound(f"token {token_name} does not exist")
            session.delete(row)

    def authenticate_token(self, token: str) -> TokenInfo | None:
        """Whom a presented token acts for, or None: unknown, revoked, or its user is
        disabled (a suspended account loses its API access with its logins)."""
        if not tokens.looks_like_token(token):
            return None
        query = _TOKEN_ROWS.add_columns(User.enabled)
        with self._transaction() as session:
            row = session.execute(
                query.where(ApiToken.token_hash == tokens.hash_token(token))
            ).first()
        if row is None:
            return None
        name, user, created, enabled = row
        if user is not None and not enabled:
            return None
        return TokenInfo(name, user, created)
