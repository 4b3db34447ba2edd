"""The worker's services: each one a listener (or a pair) with `start()` and `stop()`.

They share one datastore engine. A service that fails to start stops the worker (the
supervisor then reports it); once running, an error inside one connection costs that
connection only (`mailstack.netserver.Listener`), never the other services.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mailstack.settings.values import HostPort

log = logging.getLogger("mailstack.worker")

if TYPE_CHECKING:  # each service imports what it needs when it is made
    from sqlalchemy import Engine

    from mailstack.lookup.service import Endpoint
    from mailstack.store import MailStore


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class LookupEndpoints:
    """The lookup service's sockets: socketmap for Postfix, dict for Dovecot."""

    socketmap: Endpoint | None
    dict: Endpoint | None
    timeout: float
    sieve_dict: Endpoint | None = None


class Lookup:
    name = "lookup"

    def __init__(self, engine: Engine, endpoints: LookupEndpoints) -> None:
        from mailstack.lookup.service import LookupService

        self.service = LookupService(
            engine,
            socketmap=endpoints.socketmap,
            dict=endpoints.dict,
            sieve_dict=endpoints.sieve_dict,
            timeout=endpoints.timeout,
        )

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()


class SenderCheck:
    """The submission milter that refuses a header From the logged-in user does not own;
    it asks the store through the lookup service's gateway (one engine, one pool)."""

    name = "sender-milter"

    def __init__(self, lookup: Lookup, path: Path, mode: int) -> None:
        from mailstack.milter import SenderMilter

        self.path = path
        self.mode = mode
        self.milter = SenderMilter(lookup.service.gateway)

    async def start(self) -> None:
        await self.milter.start(path=self.path, mode=self.mode)

    async def stop(self) -> None:
        await self.milter.stop()


class Greylisting:
    """The MX's greylisting policy service (postgrey's rules, state in the datastore)."""

    name = "greylist"

    def __init__(self, engine: Engine, path: Path, mode: int, options: GreylistOptions) -> None:
        from mailstack.policy import GreylistConfig, GreylistPolicy

        self.path = path
        self.mode = mode
        config = GreylistConfig(
            delay=options.delay,
            auto_allow_after=options.auto_allow_after,
            allow_networks=options.allow_networks,
            allow_domains=options.allow_domains,
        )
        self.policy = GreylistPolicy(engine, config)

    async def start(self) -> None:
        await self.policy.start(path=self.path, mode=self.mode)

    async def stop(self) -> None:
        await self.policy.stop()


@dataclass
class GreylistOptions:
    delay: int
    auto_allow_after: int
    allow_networks: tuple[str, ...]
    allow_domains: tuple[str, ...]


def server_tls_context(cert: Path, key: str | Path) -> ssl.SSLContext:
    """TLS for a listener, loaded while still root (the key may be readable by root only)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def tls_reloader(
    context: ssl.SSLContext | None, cert: Path | None, key: Path | None
) -> Callable[[], None]:
    """Load a new certificate and key into `context`: new connections get them, open ones
    keep theirs. A pair that does not load (unreadable, mismatched) is refused as a whole."""

    def reload() -> None:
        if context is None or cert is None or key is None:
            return
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)  # try it first
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            log.error(
                "cannot load %s for the worker's TLS listeners, keeping the loaded one: %s",
                cert,
                exc,
            )
            return
        log.info("the worker's TLS listeners use the certificate in %s", cert)

    return reload


class ManageSieve:
    name = "managesieve"

    def __init__(self, engine: Engine, address: HostPort, context: ssl.SSLContext) -> None:
        from mailstack.managesieve import ManageSieveServer

        def open_store() -> MailStore:  # at the first login: the ORM is loaded only then
            from mailstack.store import MailStore

            return MailStore(engine)

        self.address = address
        self.server = ManageSieveServer(open_store, ssl_context=context)

    async def start(self) -> None:
        await self.server.start(self.address.host, self.address.port)

    async def stop(self) -> None:
        await self.server.stop()


class XOAuth2:
    """The relay's XOAUTH2 hop (see mailstack.xoauth2), its config read from a 0600 file."""

    name = "xoauth2"

    def __init__(self, config_file: Path) -> None:
        from mailstack.xoauth2 import XOAuth2Hop
        from mailstack.xoauth2.config import config_from_json

        self.hop = XOAuth2Hop(config_from_json(config_file.read_text()))

    async def start(self) -> None:
        await self.hop.start()

    async def stop(self) -> None:
        await self.hop.stop()
