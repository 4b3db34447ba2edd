"""`/domains`: hosted domains (admin tokens only; their DKIM keys: routes/dkim.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from mailstack.api.auth import Admin, Store
from mailstack.api.problems import renamed_fields
from mailstack.api.schemas import DomainIn, DomainOut

router = APIRouter(prefix="/domains", tags=["domains"])


@router.get("", summary="List hosted domains")
def list_domains(store: Store, _: Admin) -> list[DomainOut]:
    return [DomainOut.model_validate(d) for d in store.list_domains()]


@router.post("", status_code=201, summary="Host a new domain")
def add_domain(body: DomainIn, request: Request, store: Store, _: Admin) -> DomainOut:
    """On the server its DKIM key is made within seconds (`dkim show` then has it)."""
    with renamed_fields(domain="name"):
        added = DomainOut.model_validate(store.add_domain(body.name))
    on_added: Callable[[], None] | None = request.app.state.on_domain_added
    if on_added is not None:
        on_added()
    return added


@router.delete("/{domain}", status_code=204, summary="Stop hosting a domain")
def remove_domain(
    domain: str,
    store: Store,
    _: Admin,
    cascade: Annotated[
        bool,
        Query(description="Also delete its users, aliases and alias domains (else 409)."),
    ] = False,
) -> Response:
    store.remove_domain(domain, cascade=cascade)
    return Response(status_code=204)
