"""The web UI's delivery log page: the user's recent mail in and out (mailstack.deliverylog)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailstack.deliverylog.reader import MAX_EVENTS, read_deliveries

if TYPE_CHECKING:
    from mailstack.webui.app import Handler, WebUI


def delivery_routes(
    ui: WebUI, wrap: Callable[[Handler], Handler], folder: Path | None
) -> list[Route]:
    """/account/deliveries, behind `wrap`; without a delivery log (`folder` None) the page
    says so instead of showing an empty list."""

    async def page(request: Request) -> Response:
        found = await ui.logged_in(request)
        if isinstance(found, Response):
            return found
        _, session = found
        deliveries = (
            await run_in_threadpool(read_deliveries, folder, session.address, MAX_EVENTS)
            if folder is not None
            else None
        )
        return ui.render(
            "deliveries.html",
            address=session.address,
            csrf=session.csrf,
            deliveries=deliveries,
            limit=MAX_EVENTS,
        )

    return [Route("/account/deliveries", wrap(page), methods=["GET"])]
