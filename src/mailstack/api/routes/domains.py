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
from mailstack.dkim.keys import dns_record_value, parse_txt
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
    except SelectorError as exc:
        raise StoreUnavailable(f"cannot read the DKIM selectors of {name}: {exc}") from None
    private = signing.private_key
    try:
        pem = private.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no DKIM key for {name}: {private.name} is not in the key folder") from None
    except PermissionError:
        pem = None
    except OSError as exc:
        raise StoreUnavailable(f"cannot read the DKIM key of {name}: {exc.strerror}") from None
    value = _published_value(private, name) if pem is None else _derived_value(pem, name)
    return DkimRecordOut(
        domain=name, selector=signing.selector, name=signing.record_name, value=value
    )


def _derived_value(pem: bytes, name: str) -> str:
    try:
        return dns_record_value(pem)
    except (ValueError, TypeError):
        raise StoreUnavailable(f"the DKIM key of {name} is not a PEM private key") from None


def _published_value(private: Path, name: str) -> str:
    try:
        value = parse_txt(private.with_suffix(".txt").read_text())
    except OSError as exc:
        raise StoreUnavailable(f"cannot read the DKIM record of {name}: {exc.strerror}") from None
    if not value.startswith("v=DKIM1"):
        raise StoreUnavailable(f"the DKIM record file of {name} holds no record")
    return value
