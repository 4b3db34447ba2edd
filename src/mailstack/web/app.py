"""The two Starlette apps of the web listeners, each built from a list of routes and mounts.

`https_app(routes, mounts)` serves the well-known routes first, then each mount in order; the
admin API (`Mount("/api/v1", app)`) and a web UI (`Mount("/", app)`, last) plug in there.
`http_app` answers ACME challenges and the well-known routes, and sends everything else to
HTTPS with a 301.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

#: base64url, as ACME tokens are (RFC 8555 section 8.1); anything else is no file of ours
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def build_app(routes: Sequence[BaseRoute], mounts: Sequence[BaseRoute] = ()) -> Starlette:
    """One app: `routes`, then `mounts` in order (a catch-all `/` mount goes last)."""
    return Starlette(routes=[*routes, *mounts])


def https_app(routes: Sequence[BaseRoute], mounts: Sequence[BaseRoute] = ()) -> Starlette:
    return build_app(routes, mounts)


def http_app(
    routes: Sequence[BaseRoute], challenges: Path | None, https_port: int | None
) -> Starlette:
    """Port 80: ACME HTTP-01 answers from `challenges`, `routes`, and a 301 to HTTPS."""

    async def challenge(request: Request) -> Response:
        token = request.path_params["token"]
        if challenges is None or not _TOKEN.match(token):
            return PlainTextResponse("not found\n", status_code=404)
        try:
            answer = (challenges / token).read_bytes()
        except OSError:
            return PlainTextResponse("not found\n", status_code=404)
        return Response(answer, media_type="application/octet-stream")

    async def to_https(request: Request) -> Response:
        host = request.url.hostname or ""
        if https_port is None or not host:  # no HTTPS, or no name to send the client to
            return PlainTextResponse("not found\n", status_code=404)
        netloc = host if https_port == 443 else f"{host}:{https_port}"
        if ":" in host:  # an IPv6 literal
            netloc = f"[{host}]" if https_port == 443 else f"[{host}]:{https_port}"
        target = request.url.replace(scheme="https", netloc=netloc)
        return RedirectResponse(str(target), status_code=301)

    acme = Route("/.well-known/acme-challenge/{token}", challenge, methods=["GET"])
    fallback = Route("/{path:path}", to_https, methods=["GET", "HEAD", "POST", "PUT", "DELETE"])
    return build_app([acme, *routes, fallback])
