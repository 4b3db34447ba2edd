"""The routes both listeners serve: the MTA-STS policy and mail-client autoconfiguration.

A domain is answered for only when the datastore hosts it (`is_hosted`); for anything else
the answer is 404, so the listener tells nothing about other names pointed at it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from mailstack.web.site import (
    Site,
    address_domain,
    mta_sts_policy,
    outlook_autodiscover,
    requested_address,
    thunderbird_config,
)

log = logging.getLogger("mailstack.web")

IsHosted = Callable[[str], Awaitable[bool]]

MAX_AUTODISCOVER_BODY = 16 * 1024
XML = "application/xml"


def _not_found() -> Response:
    return PlainTextResponse("not found\n", status_code=404)


def _host(request: Request) -> str:
    return (request.url.hostname or "").lower().rstrip(".")


def wellknown_routes(site: Site, is_hosted: IsHosted) -> list[BaseRoute]:
    async def hosted(domain: str | None) -> bool:
        if not domain:
            return False
        try:
            return await is_hosted(domain)
        except Exception:  # the store is down: the client may ask again later
            log.exception("cannot tell whether %s is hosted", domain)
            return False

    async def mta_sts(request: Request) -> Response:
        host = _host(request)
        if not host.startswith("mta-sts.") or not await hosted(host.removeprefix("mta-sts.")):
            return _not_found()
        return PlainTextResponse(mta_sts_policy(site))

    async def autoconfig(request: Request) -> Response:
        address = request.query_params.get("emailaddress")
        if address is not None:
            domain = address_domain(address)
        else:  # autoconfig.<domain>, as Thunderbird asks first
            host = _host(request)
            domain = host.removeprefix("autoconfig.") if host.startswith("autoconfig.") else None
        if domain is None or not await hosted(domain):
            return _not_found()
        return Response(thunderbird_config(site, domain), media_type=XML)

    async def autodiscover(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_AUTODISCOVER_BODY:
                return PlainTextResponse("request too large\n", status_code=413)
        address = requested_address(body)
        if address is None or not await hosted(address_domain(address)):
            return _not_found()
        return Response(outlook_autodiscover(site, address), media_type=XML)

    return [
        Route("/.well-known/mta-sts.txt", mta_sts, methods=["GET"]),
        Route("/mail/config-v1.1.xml", autoconfig, methods=["GET"]),
        Route("/.well-known/autoconfig/mail/config-v1.1.xml", autoconfig, methods=["GET"]),
        Route("/autodiscover/autodiscover.xml", autodiscover, methods=["POST"]),
        Route("/Autodiscover/Autodiscover.xml", autodiscover, methods=["POST"]),
    ]
