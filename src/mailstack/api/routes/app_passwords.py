"""`/users/{address}/app-passwords`: a user's app passwords, for admins and for that user's
token. The password is in the answer to its creation only; the datastore keeps its hash."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import Field

from mailstack.api.auth import Caller, Store, require_self
from mailstack.api.schemas import Body, Out
from mailstack.store.security import AccountSecurity

router = APIRouter(prefix="/users/{address}/app-passwords", tags=["app passwords"])


class AppPasswordIn(Body):
    name: str = Field(examples=["thunderbird-laptop"], description="Letters, digits, . _ -")


class AppPasswordOut(Out):
    name: str
    created_at: datetime


class AppPasswordCreated(AppPasswordOut):
    password: str = Field(
        description="For the mail client's password field (IMAP, SMTP submission, "
        "ManageSieve); shown only now.",
        examples=["k3pqxw7aemzt2v4rbn5cfyhdjlus"],
    )


@router.get("", summary="List a user's app passwords (names only)")
def list_app_passwords(address: str, store: Store, caller: Caller) -> list[AppPasswordOut]:
    found = AccountSecurity(store).list_app_passwords(require_self(caller, address))
    return [AppPasswordOut.model_validate(p) for p in found]


@router.post("", status_code=201, summary="Make an app password for mail clients")
def add_app_password(
    address: str, body: AppPasswordIn, store: Store, caller: Caller
) -> AppPasswordCreated:
    """It logs in to IMAP, SMTP submission and ManageSieve, never to the web UI or this API."""
    info, secret = AccountSecurity(store).add_app_password(require_self(caller, address), body.name)
    return AppPasswordCreated(name=info.name, created_at=info.created_at, password=secret)


@router.delete("/{name}", status_code=204, summary="Revoke an app password")
def remove_app_password(address: str, name: str, store: Store, caller: Caller) -> Response:
    AccountSecurity(store).remove_app_password(require_self(caller, address), name)
    return Response(status_code=204)
