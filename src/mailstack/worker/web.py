"""The worker's web listeners and ACME service from its options (see __main__.py)."""

from __future__ import annotations

import argparse
import logging
import ssl
from typing import TYPE_CHECKING

from mailstack.settings.values import parse_listen

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sqlalchemy import Engine
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp, Receive, Scope, Send

    from mailstack.dkim.requests import RotationSetup
    from mailstack.lookup.gateway import StoreGateway
    from mailstack.mailqueue import DeleteRequests
    from mailstack.web.site import Site
    from mailstack.web.wellknown import IsHosted
    from mailstack.worker.services import Service

log = logging.getLogger("mailstack.worker")

#: Where the REST API is mounted (mailstack.api.app.MOUNT_PATH; not imported: see _api_mount)
API_PATH = "/api/v1"


def _client_ports(pairs: list[str]) -> dict[str, int]:
    ports = {}
    for pair in pairs:
        name, _, port = pair.partition("=")
        ports[name] = int(port)
    return ports


def _hosted_check(engine: Engine, gateway: StoreGateway | None) -> IsHosted:
    """Whether the datastore hosts a domain (or an alias domain), through the lookup
    service's gateway when there is one (one pool, the same deadline)."""
    from mailstack.lookup.gateway import StoreGateway
    from mailstack.lookup.resolver import Resolver

    store = gateway if gateway is not None else StoreGateway(Resolver(engine))

    def lookup(resolver: Resolver, domain: str) -> bool:
        return resolver.is_domain(domain) or resolver.alias_domain_target(domain) is not None

    async def is_hosted(domain: str) -> bool:
        return await store.call(lookup, domain)

    return is_hosted


def web_services(
    args: argparse.Namespace,
    engine: Engine,
    gateway: StoreGateway | None,
    context: ssl.SSLContext | None,
) -> list[Service]:
    from mailstack.web.listeners import web_listeners
    from mailstack.web.site import CLIENT_LISTENERS, Site

    ports = _client_ports(args.client_port)
    unknown = set(ports) - set(CLIENT_LISTENERS)
    if unknown:
        raise ValueError(f"--client-port: unknown listener {', '.join(sorted(unknown))}")
    site = Site(args.hostname, args.mta_sts_mode, ports)
    is_hosted = _hosted_check(engine, gateway)
    challenges = args.acme_folder / "challenges" if args.acme_folder else None
    services: list[Service] = list(
        web_listeners(
            site,
            is_hosted,
            http=parse_listen(args.http) if args.http else None,
            https=parse_listen(args.https) if args.https else None,
            context=context,
            challenges=challenges,
            mounts=[*_api_mount(args, engine), *_webui_mount(args, engine, site)],
        )
    )
    return services


def _api_mount(args: argparse.Namespace, engine: Engine) -> list[BaseRoute]:
    """The admin REST API at /api/v1 of the HTTPS listener, when asked for; built at its
    first request (FastAPI and the API's models cost some 15 MiB that a server whose API
    nobody calls should not pay)."""
    if not args.api:
        return []
    from starlette.routing import Mount

    if args.dkim_keys is None:
        raise ValueError("--api needs --dkim-keys")
    keys: Path = args.dkim_keys
    selector: str = args.dkim_selector
    showq: Path | None = args.postfix_queue / "public" / "showq" if args.postfix_queue else None
    domain_added = dkim_sync_asker(args)
    deletes = queue_deletes(args)
    delivery_log: Path | None = args.delivery_log
    rotation = dkim_rotation(args)

    def build() -> ASGIApp:
        from mailstack.api.app import create_api
        from mailstack.settings.values import parse_selectors

        selectors = parse_selectors(selector)
        return create_api(
            engine,
            dkim_keys=keys,
            dkim_selectors=selectors,
            showq=showq,
            on_domain_added=domain_added,
            queue_deletes=deletes,
            delivery_log=delivery_log,
            dkim_rotation=rotation,
        )

    return [Mount(API_PATH, app=LazyApp(build))]


def dkim_sync_asker(args: argparse.Namespace) -> Callable[[], None]:
    """What asks the supervisor (root) to give a new domain its DKIM key (`dkim sync`)."""
    request: Path | None = args.dkim_sync_request

    def domain_added() -> None:
        if request is not None:
            request.touch()

    return domain_added


def queue_deletes(args: argparse.Namespace) -> DeleteRequests | None:
    """How to ask the supervisor (root) to delete a queued message, when it listens."""
    if args.queue_delete_request is None:
        return None
    from mailstack.mailqueue import DeleteRequests

    return DeleteRequests(args.queue_delete_request)


def dkim_rotation(args: argparse.Namespace) -> RotationSetup | None:
    """How the API has root carry out DKIM rotation steps, when the supervisor listens."""
    if args.dkim_rotation_request is None:
        return None
    from mailstack.dkim.requests import RotationRequests, RotationSetup
    from mailstack.settings.values import (
        DEFAULT_SELECTOR_FORMAT,
        parse_nameserver,
        parse_selector_format,
    )

    pattern = parse_selector_format(args.dkim_rotate_selector or DEFAULT_SELECTOR_FORMAT)
    nameserver = parse_nameserver(args.dkim_nameserver) if args.dkim_nameserver else None
    return RotationSetup(RotationRequests(args.dkim_rotation_request), pattern, nameserver)


def _webui_mount(args: argparse.Namespace, engine: Engine, site: Site) -> list[BaseRoute]:
    """The users' web UI at / of the HTTPS listener (after the API), when asked for; built
    at its first request, as the API is (Jinja2 and the templates wait until then). Its
    admin pages get what the API gets (DKIM keys, the queue, the supervisor's jobs)."""
    if not args.webui:
        return []
    from starlette.routing import Mount

    def build() -> ASGIApp:
        from mailstack.mailqueue import MailQueue
        from mailstack.settings.values import parse_selectors
        from mailstack.webui import create_webui
        from mailstack.webui.admin import AdminSetup

        public: Path | None = args.postfix_queue / "public" if args.postfix_queue else None
        setup = AdminSetup(
            site=site,
            dkim_keys=args.dkim_keys,
            dkim_selectors=parse_selectors(args.dkim_selector),
            queue=MailQueue(public, queue_deletes(args)),
            on_domain_added=dkim_sync_asker(args),
        )
        return create_webui(engine, admin=setup, site=site, deliveries=args.delivery_log)

    return [Mount("/", app=LazyApp(build, "the web UI"))]


class LazyApp:
    """An ASGI application made by `build` when the first request arrives."""

    def __init__(self, build: Callable[[], ASGIApp], name: str = "the REST API") -> None:
        self.build = build
        self.name = name
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:  # one event loop: no other request runs inside build()
            log.info("loading %s", self.name)
            self.app = self.build()
        await self.app(scope, receive, send)
