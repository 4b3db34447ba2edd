"""`/users/{address}/sieve`: a user's Sieve scripts, for admins and for that user's token.
Scripts are compiled with sievec before they are stored, as by the CLI and ManageSieve."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from mailstack.api.auth import Caller, Store, require_self
from mailstack.api.schemas import ScriptIn, ScriptOut, ScriptWithContent

router = APIRouter(prefix="/users/{address}/sieve", tags=["sieve"])


@router.get("", summary="List a user's scripts")
def list_scripts(address: str, store: Store, caller: Caller) -> list[ScriptOut]:
    return [ScriptOut.model_validate(s) for s in store.list_scripts(require_self(caller, address))]


@router.get("/{name}", summary="One script, with its text")
def get_script(address: str, name: str, store: Store, caller: Caller) -> ScriptWithContent:
    return ScriptWithContent.model_validate(store.get_script(require_self(caller, address), name))


@router.put("/{name}", summary="Create or replace a script (it must compile)")
def put_script(
    address: str, name: str, body: ScriptIn, request: Request, store: Store, caller: Caller
) -> ScriptOut:
    info = store.put_script(
        require_self(caller, address),
        name,
        body.content,
        activate=body.activate,
        checker=request.app.state.sieve_checker,
    )
    return ScriptOut.model_validate(info)


@router.delete("/{name}", status_code=204, summary="Delete a script (not the active one: 409)")
def remove_script(address: str, name: str, store: Store, caller: Caller) -> Response:
    store.remove_script(require_self(caller, address), name)
    return Response(status_code=204)


@router.put("/{name}/active", status_code=204, summary="Make a script the active one")
def activate_script(address: str, name: str, store: Store, caller: Caller) -> Response:
    store.activate_script(require_self(caller, address), name)
    return Response(status_code=204)


@router.delete("/{name}/active", status_code=204, summary="Run no script (if this one runs)")
def deactivate_script(address: str, name: str, store: Store, caller: Caller) -> Response:
    canonical = require_self(caller, address)
    if store.get_script(canonical, name).active:
        store.activate_script(canonical, None)
    return Response(status_code=204)
