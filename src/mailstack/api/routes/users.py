"""`/users`: mailboxes. Admins manage them all (and who else is an admin); a user token sees
and changes only its own user's password and spam filing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from mailstack import names
from mailstack.api.auth import Admin, Caller, Store, require_self
from mailstack.api.schemas import (
    PasswordIn,
    SpamSettingsIn,
    SpamSettingsOut,
    UserChangeIn,
    UserIn,
    UserOut,
    UserSettingsIn,
)
from mailstack.store import MailStore

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", summary="List users (a user token: only its own)")
def list_users(
    store: Store,
    caller: Caller,
    domain: Annotated[str | None, Query(description="Only this domain.")] = None,
) -> list[UserOut]:
    if caller.user is not None:
        own = UserOut.model_validate(store.get_user(caller.user))
        return [own] if domain is None or names.normalise_domain(domain) == own.domain else []
    return [UserOut.model_validate(u) for u in store.list_users(domain)]


@router.post("", status_code=201, summary="Create a user in a hosted domain")
def add_user(body: UserIn, store: Store, _: Admin) -> UserOut:
    return UserOut.model_validate(store.add_user(body.address, body.password, quota=body.quota))


@router.get("/{address}", summary="One user")
def get_user(address: str, store: Store, caller: Caller) -> UserOut:
    return UserOut.model_validate(store.get_user(require_self(caller, address)))


def _change(
    store: MailStore,
    address: str,
    admin: bool | None,
    enabled: bool | None,
    quota: tuple[str | int | None] | None,
) -> UserOut:
    """Apply the given changes (None: unchanged; `quota` in a 1-tuple, whose None is
    unlimited); the quota first: a bad one is refused before anything is written."""
    if quota is not None:
        store.set_quota(address, quota[0])
    if admin is not None:
        store.set_admin(address, admin)
    if enabled is not None:
        (store.enable_user if enabled else store.disable_user)(address)
    return UserOut.model_validate(store.get_user(address))


@router.put("/{address}", summary="Set a user's admin flag, login and quota (admins only)")
def set_user(address: str, body: UserSettingsIn, store: Store, _: Admin) -> UserOut:
    """Every field is set. A user token gets 403, also for its own user: nobody makes
    themselves an admin."""
    return _change(store, address, body.admin, body.enabled, (body.quota,))


@router.patch("/{address}", summary="Change a user's admin flag, login or quota (admins only)")
def change_user(address: str, body: UserChangeIn, store: Store, _: Admin) -> UserOut:
    """Only the fields given change (`"quota": null` makes it unlimited). A user token gets
    403, also for its own user."""
    given = body.model_fields_set
    quota = (body.quota,) if "quota" in given else None
    admin = body.admin if "admin" in given else None
    enabled = body.enabled if "enabled" in given else None
    return _change(store, address, admin, enabled, quota)


@router.delete("/{address}", status_code=204, summary="Delete a user and their Sieve scripts")
def remove_user(address: str, store: Store, _: Admin) -> Response:
    """The mail on disk is left alone; the user's API tokens go with the user."""
    store.remove_user(address)
    return Response(status_code=204)


@router.put("/{address}/password", status_code=204, summary="Set a user's password")
def set_password(address: str, body: PasswordIn, store: Store, caller: Caller) -> Response:
    store.set_password(require_self(caller, address), body.password)
    return Response(status_code=204)


@router.get("/{address}/spam", summary="A user's spam filing")
def get_spam(address: str, store: Store, caller: Caller) -> SpamSettingsOut:
    return SpamSettingsOut.model_validate(store.spam_settings(require_self(caller, address)))


@router.put("/{address}/spam", summary="Set a user's spam filing (applies to the next message)")
def set_spam(address: str, body: SpamSettingsIn, store: Store, caller: Caller) -> SpamSettingsOut:
    """Both fields are set; what the MX refuses stays refused for everyone."""
    found = store.set_spam(
        require_self(caller, address), threshold=body.threshold, enabled=body.filter
    )
    return SpamSettingsOut.model_validate(found)
