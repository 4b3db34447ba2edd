"""The web UI's download of an Apple configuration profile for the logged-in user."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailstack.web.mobileconfig import MEDIA_TYPE, apple_profile
from mailstack.web.site import Site

if TYPE_CHECKING:
    from mailstack.webui.app import Handler, WebUI

PATH = "/account/mail.mobileconfig"


def apple_routes(ui: WebUI, wrap: Callable[[Handler], Handler], site: Site) -> list[Route]:
    """GET PATH: the profile for whoever is logged in (no password in it), as a download."""

    async def download(request: Request) -> Response:
        found = await ui.logged_in(request)
        if isinstance(found, Response):
            return found
        _, session = found
        disposition = 'attachment; filename="mail.mobileconfig"'
        return Response(
            apple_profile(site, session.address),
            media_type=MEDIA_TYPE,
            headers={"Content-Disposition": disposition},
        )

    return [Route(PATH, wrap(download), methods=["GET"])]
