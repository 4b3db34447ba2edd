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
from mailstack.dkim.keys import KeyUnreadable, published_value
from mailstack.dkim.selectors import SelectorError, signing_key
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
    """Read from the private key file OpenDKIM signs the domain's mail with: the active
    selector's after a key rotation (`mailstack dkim rotate`), else `<domain>.private` in the
    key folder with the selector DKIM_SELECTOR gives the domain. The worker (not root) may
    not read that file: then the public `.txt` beside it, written with the key, gives the
    record."""
    name = names.normalise_domain(domain)
    if name not in {d.name for d in store.list_domains()}:
        raise NotFound(f"domain {name} is not hosted here")
    keys: Path = request.app.state.dkim_keys
    selectors: DkimSelectors = request.app.state.dkim_selectors
    try:
        signing = signing_key(keys, name, selectors.for_domain(name))
        value = published_value(signing.private_key, name)
    except SelectorError as exc:
        raise StoreUnavailable(f"cannot read the DKIM selectors of {name}: {exc}") from None
    except KeyUnreadable as exc:
        raise StoreUnavailable(str(exc)) from None
    if value is None:
        private = signing.private_key
        raise NotFound(f"no DKIM key for {name}: {private.name} is not in the key folder")
    return DkimRecordOut(
        domain=name, selector=signing.selector, name=signing.record_name, value=value
    )
