"""A user's app passwords and TOTP second factor: the datastore rules, for the CLI, the API,
the web UI and ManageSieve alike.

Where each credential works:

- account password: the web UI (then a code, with TOTP on); IMAP, submission and
  ManageSieve only while TOTP is off; never the API (bearer tokens only).
- app password: IMAP, submission and ManageSieve; never the web UI nor the API.

With TOTP on, the account password no longer opens the mailbox over IMAP and submission:
otherwise a phished password alone would still read and send all mail, and the second
factor would guard only the settings pages. Mail clients then use app passwords (as with
Google and Fastmail); a refused account password looks exactly like a wrong one (no oracle
that the password was right, and the same cost: see `passwords.unusable_hash`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.orm import Session

from mailstack import names, totp
from mailstack.store import apppasswords, passwords
from mailstack.store.apppasswords import AppPasswordInfo
from mailstack.store.errors import Conflict, NotFound
from mailstack.store.models import AppPassword, User, UserTotp
from mailstack.store.service import MailStore


def _user(session: Session, address: str) -> User:
    user = session.scalar(select(User).where(User.address == address))
    if user is None:
        raise NotFound(f"user {address} does not exist")
    return user


class AccountSecurity:
    """App passwords and TOTP of the users in `store`; `clock` gives Unix seconds."""

    def __init__(self, store: MailStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    # -- app passwords ----------------------------------------------------------------------

    def add_app_password(self, address: str, name: str) -> tuple[AppPasswordInfo, str]:
        """A new app password named `name`, returned once in plain; only its hash is kept."""
        canonical = names.normalise_address(address)
        label = apppasswords.validate_name(name)
        with self.store.transaction() as session:
            user = _user(session, canonical)
            taken = dict(
                session.execute(
                    select(AppPassword.name, AppPassword.ident).where(
                        AppPassword.user_id == user.id
                    )
                ).all()
            )
            if label in taken:
                raise Conflict(f"{canonical} already has an app password named {label}")
            if len(taken) >= apppasswords.MAX_PER_USER:
                raise Conflict(f"{canonical} has {apppasswords.MAX_PER_USER} app passwords")
            secret = apppasswords.new_app_password()
            while apppasswords.ident_of(secret) in taken.values():
                secret = apppasswords.new_app_password()
            row = AppPassword(
                user_id=user.id,
                name=label,
                ident=apppasswords.ident_of(secret),
                password_hash=passwords.hash_password(secret),
            )
            session.add(row)
            session.flush()
            return AppPasswordInfo(label, row.created_at), secret

    def list_app_passwords(self, address: str) -> list[AppPasswordInfo]:
        canonical = names.normalise_address(address)
        with self.store.transaction() as session:
            user = _user(session, canonical)
            rows = session.execute(
                select(AppPassword.name, AppPassword.created_at)
                .where(AppPassword.user_id == user.id)
                .order_by(AppPassword.name)
            )
            return [AppPasswordInfo(name, created) for name, created in rows]

    def remove_app_password(self, address: str, name: str) -> None:
        """Revoke: the next login with it fails (Dovecot caches no passdb answers)."""
        canonical = names.normalise_address(address)
        label = apppasswords.validate_name(name)
        with self.store.transaction() as session:
            user = _user(session, canonical)
            row = session.scalar(
                select(AppPassword).where(AppPassword.user_id == user.id, AppPassword.name == label)
            )
            if row is None:
                raise NotFound(f"{canonical} has no app password named {label}")
            session.delete(row)

    def verify_mail_password(self, address: str, password: str) -> bool:
        """What Dovecot's two passdbs decide, for the mail logins mailstack serves itself
        (ManageSieve): the account password while TOTP is off, or an app password. Always
        two Argon2 verifications, so the answer's timing tells nothing."""
        canonical = names.try_address(address)
        account_hash = app_hash = None
        if canonical is not None:
            ident = apppasswords.ident_of(password)
            with self.store.transaction() as session:
                row = session.execute(
                    select(User.id, User.password_hash, UserTotp.enabled)
                    .outerjoin(UserTotp, UserTotp.user_id == User.id)
                    .where(User.address == canonical, User.enabled)
                ).first()
                if row is not None:
                    user_id, stored, totp_on = row
                    account_hash = passwords.unusable_hash() if totp_on else stored
                    app_hash = session.scalar(
                        select(AppPassword.password_hash).where(
                            AppPassword.user_id == user_id, AppPassword.ident == ident
                        )
                    )
        account_ok = passwords.verify_password(account_hash or passwords.unusable_hash(), password)
        app_ok = passwords.verify_password(app_hash or passwords.unusable_hash(), password)
        return account_ok or app_ok

    # -- TOTP -------------------------------------------------------------------------------

    def totp_enabled(self, address: str) -> bool:
        canonical = names.normalise_address(address)
        with self.store.transaction() as session:
            user = _user(session, canonical)
            return bool(
                session.scalar(
                    select(func.count())
                    .select_from(UserTotp)
                    .where(UserTotp.user_id == user.id, UserTotp.enabled)
                )
            )

    def begin_totp(self, address: str) -> str:
        """A new secret waiting for its first code (`confirm_totp`); replaces one that was
        never confirmed. Refused while TOTP is on: disable it first."""
        canonical = names.normalise_address(address)
        secret = totp.new_secret()
        with self.store.transaction() as session:
            user = _user(session, canonical)
            row = session.get(UserTotp, user.id)
            if row is not None and row.enabled:
                raise Conflict(f"TOTP is already on for {canonical}")
            if row is None:
                session.add(UserTotp(user_id=user.id, secret=secret, enabled=False))
            else:
                row.secret, row.last_step = secret, None
            return secret

    def pending_totp_secret(self, address: str) -> str | None:
        """The secret `begin_totp` made, while it waits for its first code."""
        canonical = names.normalise_address(address)
        with self.store.transaction() as session:
            user = _user(session, canonical)
            row = session.get(UserTotp, user.id)
            return row.secret if row is not None and not row.enabled else None

    def confirm_totp(self, address: str, code: str) -> bool:
        """Turn TOTP on if `code` is valid for the pending secret (and not replayed)."""
        return self._accept(address, code, enabled=False)

    def check_totp(self, address: str, code: str) -> bool:
        """A login's second step: `code` is valid now and newer than any accepted before."""
        return self._accept(address, code, enabled=True)

    def disable_totp(self, address: str, code: str) -> bool:
        """Turn TOTP off, if `code` is valid (the caller checked the account password)."""
        if not self.check_totp(address, code):
            return False
        self.reset_totp(address)
        return True

    def reset_totp(self, address: str) -> bool:
        """Remove the user's TOTP (an admin's reset); False if there was none."""
        canonical = names.normalise_address(address)
        with self.store.transaction() as session:
            user = _user(session, canonical)
            row = session.get(UserTotp, user.id)
            if row is None:
                return False
            session.delete(row)
            return bool(row.enabled)

    def _accept(self, address: str, code: str, *, enabled: bool) -> bool:
        """Accept `code` once: the step is stored with a conditional UPDATE, so two requests
        racing with the same code cannot both pass."""
        canonical = names.normalise_address(address)
        if totp.clean_code(code) is None:
            return False
        with self.store.transaction() as session:
            user = _user(session, canonical)
            row = session.get(UserTotp, user.id)
            if row is None or row.enabled != enabled:
                return False
            step = totp.matching_step(row.secret, code, self.clock())
            if step is None:
                return False
            done = cast(
                CursorResult[Any],
                session.execute(
                    update(UserTotp)
                    .where(
                        UserTotp.user_id == user.id,
                        or_(UserTotp.last_step.is_(None), UserTotp.last_step < step),
                    )
                    .values(last_step=step, enabled=True)
                    .execution_options(synchronize_session=False)
                ),
            )
            return done.rowcount == 1
