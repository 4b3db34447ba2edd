"""The worker's web listeners from its options: HTTP (challenges, well-known, redirect) and
HTTPS (well-known, then whatever is mounted)."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

from starlette.routing import BaseRoute

from mailstack.settings.values import HostPort
from mailstack.web.app import http_app, https_app
from mailstack.web.listener import WebListener
from mailstack.web.site import Site
from mailstack.web.wellknown import IsHosted, wellknown_routes


def web_listeners(
    site: Site,
    is_hosted: IsHosted,
    *,
    http: HostPort | None,
    https: HostPort | None,
    context: ssl.SSLContext | None,
    challenges: Path | None = None,
    mounts: Sequence[BaseRoute] = (),
) -> list[WebListener]:
    """Bound now (the caller may still be root); served once started."""
    routes = wellknown_routes(site, is_hosted)
    listeners = []
    if https is not None:
        if context is None:
            raise ValueError("the HTTPS listener needs a certificate and key")
        listeners.append(WebListener("https", https, https_app(routes, mounts), context))
    if http is not None:
        https_port = https.port if https is not None else None
        listeners.append(WebListener("http", http, http_app(routes, challenges, https_port)))
    return listeners
