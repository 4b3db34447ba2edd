"""`/domains`: hosted domains and their DKIM records (admin tokens only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from mailstack import names
from mailstack.api.auth import Admin, Store
from mailstack.api.problems import renamed_fields
from mailstack.api.schemas import DkimRecordOut, DomainIn, DomainOut
from mailstack.dkim.keys import KeyUnreadable, key_path, published_value
from mailstack.settings.values import DkimSelectors
from mailstack.store import NotFound, StoreUnavailable

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


@router.get("/{domain}/dkim", summary="The DKIM record to publish for a domain")
def dkim_record(domain: str, request: Request, store: Store, _: Admin) -> DkimRecordOut:
    """Read from the domain's private key file (`<domain>.private` in the key folder), the
    one OpenDKIM signs with; the selector is the one DKIM_SELECTOR gives the domain. The
    worker (not root) may not read that file: then the public `<domain>.txt` beside it,
    which is written with the key, gives the record."""
    name = names.normalise_domain(domain)
    if name not in {d.name for d in store.list_domains()}:
        raise NotFound(f"domain {name} is not hosted here")
    keys: Path = request.app.state.dkim_keys
    selectors: DkimSelectors = request.app.state.dkim_selectors
    try:
        value = published_value(keys, name)
    except KeyUnreadable as exc:
        raise StoreUnavailable(str(exc)) from None
    if value is None:
        private = key_path(keys, name)
        raise NotFound(f"no DKIM key for {name}: {private.name} is not in the key folder")
    selector = selectors.for_domain(name)
    return DkimRecordOut(
        domain=name, selector=selector, name=f"{selector}._domainkey.{name}", value=value
    )
