"""`mailstack dkim requested`: root carries out the DKIM rotation steps the REST API asked
for (the server's supervisor runs it when the worker leaves a request; see
mailstack.dkim.requests).

Each step follows the CLI's rules (mailstack.dkim.rotation) under the key folder's lock, so
a step that no longer fits (another admin rotated meanwhile) is refused, not forced. The
worker checked DNS before asking for an activation, so it is not asked again here. What
became of each request is recorded beside the keys for the API to show; OpenDKIM reads its
tables again once, after all of them.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from mailstack.admin.common import AdminError, fail, root_option
from mailstack.admin.dkim import selector_for, write_new_key
from mailstack.dkim import rotation
from mailstack.dkim.requests import (
    Outcome,
    RotationRequest,
    Status,
    record_outcomes,
    take_requests,
)
from mailstack.dkim.selectors import SelectorError
from mailstack.errors import ExitCode
from mailstack.paths import Paths
from mailstack.settings.values import DEFAULT_SELECTOR_FORMAT

Root = Annotated[Path, root_option("Keys are under DIR/etc/opendkim/keys.")]


def register(app: typer.Typer) -> None:
    """Add `requested` to the `dkim` group."""
    app.command("requested")(requested)


def carry_out(keys_dir: Path, request: RotationRequest) -> str:
    """One step, as the CLI does it; what was done. SelectorError when refused."""
    now = datetime.now(UTC)
    domain, selector = request.domain, request.selector
    if request.action == "rotate":
        made = rotation.rotate(
            keys_dir,
            domain,
            selector,
            default_selector=selector_for(None, domain),
            pattern=DEFAULT_SELECTOR_FORMAT,  # unused: the worker chose the selector
            now=now,
            write_key=write_new_key,
        )
        return f"made {selector}: {made.added.advice(domain)}"
    if request.action == "activate":
        previous, _ = rotation.activate(keys_dir, domain, selector, now=now, check=None)
        return f"{selector} signs; {previous} retires"
    rotation.retire(
        keys_dir, domain, selector, now=now, force=request.force, force_hint='"force": true'
    )
    return f"retired {selector}; delete its DNS record now"


def requested(root: Root = Path("/")) -> None:
    """Carry out the DKIM key rotation steps the REST API asked for (the server runs this
    as root when asked)."""
    from mailstack.admin.domains import SIGNING_NOW, sync_signing

    if os.geteuid() != 0:
        fail("only root may write DKIM keys", ExitCode.FAILURE)
    paths = Paths(root)
    keys_dir = paths.dkim_keys
    try:
        taken = take_requests(paths.dkim_rotation_request)
    except OSError as exc:  # a folder swapped for a link: ELOOP
        fail(f"cannot read the requests: {exc}", ExitCode.FAILURE)
    outcomes: dict[str, list[Outcome]] = {}
    for request in taken:
        status: Status = "done"
        try:
            detail = carry_out(keys_dir, request)
        except SelectorError as exc:
            detail, status = str(exc), "refused"
        except (AdminError, OSError) as exc:
            detail, status = str(exc), "failed"
        outcome = Outcome(request, status, detail, datetime.now(UTC))
        outcomes.setdefault(request.domain, []).append(outcome)
        typer.echo(f"{request.action} {request.domain} {request.selector}: {status}: {detail}")
    if any(o.status == "done" for found in outcomes.values() for o in found):
        signed = sync_signing([], "apply this") or {}
        for domain in outcomes:
            if signed.get(domain) != SIGNING_NOW:
                typer.echo(f"{domain}: signing changes at the server's next start")
    for domain, found in outcomes.items():
        record_outcomes(keys_dir, domain, found)
