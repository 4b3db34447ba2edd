"""`/aliases`. Admins manage every alias. A user token lists the aliases delivering to its
user, adds new addresses of its domain for itself, and leaves aliases (the datastore's
`add_own_alias` and `leave_alias` hold the rules)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from mailstack import names
from mailstack.api.auth import Caller, Store
from mailstack.api.schemas import AliasIn, AliasOut
from mailstack.store import Forbidden

router = APIRouter(prefix="/aliases", tags=["aliases"])


@router.get("", summary="List aliases (a user token: those delivering to it)")
def list_aliases(
    store: Store,
    caller: Caller,
    domain: Annotated[str | None, Query(description="Only this domain.")] = None,
) -> list[AliasOut]:
    if caller.user is None:
        return [AliasOut.model_validate(a) for a in store.list_aliases(domain)]
    mine = store.aliases_delivering_to(caller.user)
    wanted = None if domain is None else names.normalise_domain(domain)
    return [AliasOut.model_validate(a) for a in mine if wanted in (None, a.domain)]


def _only_self(caller_user: str, targets: list[str]) -> None:
    given = {names.normalise_address(t, "targets") for t in targets}
    if given != {caller_user}:
        raise Forbidden(f"a user token may only make aliases delivering to {caller_user}")


@router.post("", status_code=201, summary="Create an alias, or add targets to one")
def add_alias(body: AliasIn, store: Store, caller: Caller) -> AliasOut:
    if caller.user is None:
        return AliasOut.model_validate(store.add_alias(body.source, body.targets))
    _only_self(caller.user, body.targets)
    return AliasOut.model_validate(store.add_own_alias(caller.user, body.source))


@router.delete("/{source}", status_code=204, summary="Remove an alias or some of its targets")
def remove_alias(
    source: str,
    store: Store,
    caller: Caller,
    target: Annotated[
        list[str] | None,
        Query(description="Remove only these targets (repeat); the alias goes with its last."),
    ] = None,
) -> Response:
    """A user token removes its own address from the alias (the alias goes with it if it
    was the last target)."""
    if caller.user is None:
        store.remove_alias(source, target or None)
    else:
        if target:
            _only_self(caller.user, target)
        store.leave_alias(caller.user, source)
    return Response(status_code=204)
