"""`/domains/{domain}/dkim`: a domain's DKIM selectors and key rotation (admin tokens only).

The rules are the CLI's (`mailstack dkim rotate|activate|retire`, mailstack.dkim.rotation).
The worker serving the API is not root and may not write keys: it checks a step against the
selectors (and DNS, for an activation) and answers a refusal at once (404, 409, 503), else
it leaves the step for root (mailstack.dkim.requests) and answers 202; the supervisor has
it done within seconds, and `GET` then shows the new state and what became of the request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from mailstack import names
from mailstack.api.auth import Admin, Store
from mailstack.api.schemas import DkimRecordOut
from mailstack.dkim import rotation
from mailstack.dkim.keys import KeyUnreadable, published_value
from mailstack.dkim.requests import (
    Action,
    RotationRequest,
    RotationSetup,
    read_outcomes,
)
from mailstack.dkim.selectors import (
    RETIRE_AFTER,
    DomainSelectors,
    SelectorError,
    SelectorKey,
    State,
    UnknownSelector,
    domain_selectors,
    signing_key,
)
from mailstack.errors import InvalidInput
from mailstack.settings.values import DkimSelectors, parse_selector
from mailstack.store import Conflict, MailStore, NotFound, StoreUnavailable

router = APIRouter(prefix="/domains/{domain}/dkim", tags=["dkim"])

FORCE_HINT = '"force": true'
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted: root carries it out within seconds"}
}


class DkimSelectorOut(BaseModel):
    selector: str
    state: Literal["active", "pending", "retiring"] = Field(
        description="active: signs the domain's mail; pending: made by a rotation, signs once "
        "activated; retiring: signed before, its record stays published until retired"
    )
    since: datetime = Field(description="when it entered this state")
    retire_after: datetime | None = Field(
        description="retiring: from when it may be retired without force"
    )
    name: str = Field(examples=["ms202611._domainkey.example.com"])
    type: Literal["TXT"] = "TXT"
    value: str | None = Field(description="the TXT value to publish; null if the key is missing")


class DkimRequestOut(BaseModel):
    """A rotation step asked for through the API, and what became of it."""

    id: str
    action: Action
    selector: str = Field(description="the new selector (rotate), or the one changed")
    force: bool
    status: Literal["waiting", "done", "refused", "failed"] = Field(
        description="waiting: root has not carried it out yet; done; refused: the rules said "
        "no when root came to it (detail says why); failed: something broke (detail)"
    )
    detail: str
    requested_at: datetime
    finished_at: datetime | None


class DkimOut(DkimRecordOut):
    """The record that signs now (selector, name, value: as before any rotation), every
    selector with its state, and the rotation steps asked for lately."""

    selectors: list[DkimSelectorOut]
    requests: list[DkimRequestOut] = Field(description="oldest first: the last done, then waiting")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RotateIn(Body):
    selector: str | None = Field(
        default=None,
        description="The new selector; default: the date in MAILSTACK_DKIM_ROTATE_SELECTOR's "
        "pattern (ms202611), with -2, -3... when the domain already has it.",
    )


class ActivateIn(Body):
    force: bool = Field(default=False, description="Do not check that DNS publishes the record.")


class RetireIn(Body):
    force: bool = Field(
        default=False,
        description=f"Retire a selector that stopped signing less than {RETIRE_AFTER.days} "
        "days ago.",
    )


def _hosted(store: MailStore, domain: str) -> str:
    name = names.normalise_domain(domain)
    if name not in {d.name for d in store.list_domains()}:
        raise NotFound(f"domain {name} is not hosted here")
    return name


def _keys(request: Request) -> Path:
    keys: Path = request.app.state.dkim_keys
    return keys


def _default_selector(request: Request, domain: str) -> str:
    selectors: DkimSelectors = request.app.state.dkim_selectors
    return selectors.for_domain(domain)


def _setup(request: Request) -> RotationSetup:
    setup: RotationSetup | None = request.app.state.dkim_rotation
    if setup is None:
        raise StoreUnavailable("DKIM key rotation needs the server's supervisor (root)")
    return setup


@contextmanager
def _rules() -> Iterator[None]:
    """The rotation rules' refusals as API errors."""
    try:
        yield
    except UnknownSelector as exc:
        raise NotFound(str(exc)) from None
    except rotation.LookupFailed as exc:
        raise StoreUnavailable(str(exc)) from None
    except SelectorError as exc:
        raise Conflict(str(exc)) from None
    except KeyUnreadable as exc:
        raise StoreUnavailable(str(exc)) from None


def _selectors(request: Request, domain: str) -> DomainSelectors:
    with _rules():
        return rotation.current_selectors(
            _keys(request), domain, _default_selector(request, domain)
        )


def _selector_out(keys_dir: Path, domain: str, key: SelectorKey) -> DkimSelectorOut:
    retiring = key.state is State.RETIRING
    return DkimSelectorOut(
        selector=key.selector,
        state=key.state.value,
        since=key.since,
        retire_after=key.since + RETIRE_AFTER if retiring else None,
        name=f"{key.selector}._domainkey.{domain}",
        value=published_value(key.private_key(keys_dir), domain),
    )


def _request_out(request: RotationRequest) -> DkimRequestOut:
    return DkimRequestOut(
        id=request.id,
        action=request.action,
        selector=request.selector,
        force=request.force,
        status="waiting",
        detail="",
        requested_at=request.requested_at,
        finished_at=None,
    )


@router.get("", summary="A domain's DKIM selectors and the record to publish")
def dkim_record(domain: str, request: Request, store: Store, _: Admin) -> DkimOut:
    """`selector`, `name` and `value` are the key OpenDKIM signs with now (the active
    selector's); `selectors` lists every selector with its state and record (after a
    rotation: all to publish), `requests` the rotation steps asked for through the API.
    The worker (not root) may not read the keys: the public `.txt` beside each, written
    with the key, gives its record."""
    name = _hosted(store, domain)
    keys = _keys(request)
    default = _default_selector(request, name)
    with _rules():
        signing = signing_key(keys, name, default)
        value = published_value(signing.private_key, name)
        if value is None:
            missing = signing.private_key.name
            raise NotFound(f"no DKIM key for {name}: {missing} is not in the key folder")
        found = domain_selectors(keys, name, default)
        listed = [_selector_out(keys, name, k) for k in (found.keys if found else ())]
    setup: RotationSetup | None = request.app.state.dkim_rotation
    waiting = setup.requests.waiting(name) if setup is not None else []
    done = [DkimRequestOut.model_validate(item) for item in read_outcomes(keys, name)]
    return DkimOut(
        domain=name,
        selector=signing.selector,
        name=signing.record_name,
        value=value,
        selectors=listed,
        requests=[*done, *(_request_out(r) for r in waiting)],
    )


@dataclass(frozen=True)
class Step:
    """What every rotation step needs: the request (its key folder and selectors), where
    to say where to look, how to ask root, and the hosted domain (normalised)."""

    request: Request
    response: Response
    setup: RotationSetup
    domain: str

    def selectors(self) -> DomainSelectors:
        return _selectors(self.request, self.domain)

    def ask(self, action: Action, selector: str, force: bool = False) -> DkimRequestOut:
        """Leave the checked step for root; 409 while another step of the domain waits."""
        waiting = self.setup.requests.waiting(self.domain)
        if waiting:
            first = waiting[0]
            raise Conflict(
                f"the {first.action} of {first.selector} asked for at "
                f"{first.requested_at:%H:%M:%S} UTC is not done yet: try again in a few seconds"
            )
        try:
            made = self.setup.requests.request(action, self.domain, selector, force=force)
        except OSError as exc:
            raise StoreUnavailable(f"cannot ask for the DKIM step: {exc.strerror}") from None
        mount = self.request.scope.get("root_path", "")  # /api/v1, where the worker mounts it
        self.response.headers["Location"] = f"{mount}/domains/{self.domain}/dkim"
        return _request_out(made)


def step(domain: str, request: Request, response: Response, store: Store, _: Admin) -> Step:
    """An admin's step on a hosted domain, on a server whose root can carry it out."""
    setup = _setup(request)
    return Step(request, response, setup, _hosted(store, domain))


StepOn = Annotated[Step, Depends(step)]


@router.post(
    "/rotate",
    status_code=202,
    summary="Make a new key under a new pending selector (202: done within seconds)",
    responses=ACCEPTED,
)
def rotate_key(step: StepOn, body: RotateIn | None = None) -> DkimRequestOut:
    """The active key keeps signing; the new selector's record (in `GET`'s `selectors`,
    once made) is to be published before it is activated. 409 while the domain has no key
    or already a pending selector."""
    wanted = body.selector if body is not None else None
    if wanted is not None:
        try:
            wanted = parse_selector(wanted)
        except ValueError as exc:
            raise InvalidInput("selector", str(exc)) from None
    with _rules():
        now = datetime.now(UTC)
        state = rotation.plan_rotation(step.selectors(), wanted, step.setup.selector_format, now)
    added = next(k for k in state.keys if k.state is State.PENDING)
    return step.ask("rotate", added.selector)


@router.post(
    "/{selector}/activate",
    status_code=202,
    summary="Sign with a pending (or retiring) selector once DNS publishes its record",
    responses=ACCEPTED,
)
def activate_key(selector: str, step: StepOn, body: ActivateIn | None = None) -> DkimRequestOut:
    """The selector signing until now retires (its record stays published). Unless
    `force`, DNS must answer the selector's name with this key (checked as `mailstack dkim
    activate` does): 409 says what is published instead, 503 when DNS cannot be asked."""
    force = body.force if body is not None else False
    with _rules():
        state = step.selectors().activated(selector, datetime.now(UTC))
        if not force:
            chosen = state.get(selector)
            value = rotation.record_value(_keys(step.request), step.domain, chosen)
            rotation.dns_check(step.setup.nameserver, FORCE_HINT)(step.domain, chosen, value)
    return step.ask("activate", selector, force)


@router.post(
    "/{selector}/retire",
    status_code=202,
    summary="Forget a retiring (or pending) selector and its key",
    responses=ACCEPTED,
)
def retire_key(selector: str, step: StepOn, body: RetireIn | None = None) -> DkimRequestOut:
    """409 for the active selector, and for one that stopped signing less than 7 days ago
    unless `force` (mail it signed may still be on its way). Delete its DNS record after."""
    force = body.force if body is not None else False
    with _rules():
        now = datetime.now(UTC)
        rotation.plan_retirement(step.selectors(), selector, now, force, FORCE_HINT)
    return step.ask("retire", selector, force)
