"""Bearer tokens: who calls, and what they may touch.

An admin token (made by `mailstack token create NAME`) may do everything. A user token
(`--user ADDRESS`) acts for that user only: their own password, the aliases delivering to
them and their Sieve scripts; anything else is 403. The rules about which aliases a user
may add or leave are the datastore's (`MailStore.add_own_alias`, `leave_alias`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailstack import names
from mailstack.api.problems import Unauthorized
from mailstack.store import Forbidden, MailStore, TokenInfo

bearer = HTTPBearer(
    auto_error=False,
    description="A token from `mailstack token create NAME [--user ADDRESS]`.",
)


def get_store(request: Request) -> MailStore:
    store: MailStore = request.app.state.store
    return store


Store = Annotated[MailStore, Depends(get_store)]


def get_caller(
    store: Store,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> TokenInfo:
    if credentials is None:
        raise Unauthorized("send a bearer token: Authorization: Bearer TOKEN", invalid_token=False)
    caller = store.authenticate_token(credentials.credentials)
    if caller is None:
        raise Unauthorized("the token is unknown or revoked", invalid_token=True)
    return caller


Caller = Annotated[TokenInfo, Depends(get_caller)]


def require_admin(caller: TokenInfo) -> None:
    if not caller.admin:
        raise Forbidden(f"token {caller.name} acts for {caller.user} only; this needs an admin")


def require_self(caller: TokenInfo, address: str) -> str:
    """The canonical `address`, if the caller may act for it (an admin, or that user)."""
    canonical = names.normalise_address(address)
    if not caller.admin and caller.user != canonical:
        raise Forbidden(f"token {caller.name} acts for {caller.user} only, not {canonical}")
    return canonical


def admin_caller(caller: Caller) -> TokenInfo:
    require_admin(caller)
    return caller


Admin = Annotated[TokenInfo, Depends(admin_caller)]
