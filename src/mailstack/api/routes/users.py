"""`/users`: mailboxes. Admins manage them all; a user token sees and changes only its own
user's password and spam filing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from mailstack import names
from mailstack.api.auth import Admin, Caller, Store, require_self
from mailstack.api.schemas import (
    PasswordIn,
    SpamSettingsIn,
    SpamSettingsOut,
    UserIn,
    UserOut,
)

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
