"""One web listener: a socket bound while the worker is still root (ports 80 and 443 need
it), served by uvicorn on the worker's event loop once privileges are gone.

Uvicorn's `serve()` would take over SIGTERM and SIGINT and wake ten times a second; the
worker owns its signals and its loop, so the listener uses the server's `startup` and
`shutdown` halves, which take ready sockets (as uvicorn's Gunicorn worker does).
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import TYPE_CHECKING

from mailstack.settings.values import HostPort

if TYPE_CHECKING:
    from starlette.types import ASGIApp

log = logging.getLogger("mailstack.web")

GRACE_SECONDS = 5


def bind(address: HostPort) -> socket.socket:
    """A listening TCP socket on `address`, IPv6 literals included."""
    host = address.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, address.port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class WebListener:
    """A worker service (`start`, `stop`) serving `app` on a socket bound at construction."""

    def __init__(
        self, name: str, address: HostPort, app: ASGIApp, context: ssl.SSLContext | None = None
    ) -> None:
        import uvicorn

        self.name = name
        self.socket = bind(address)
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=GRACE_SECONDS,
        )
        config.load()
        config.ssl = context  # ours, so that a renewed certificate is loaded into it
        self.server = uvicorn.Server(config)
        self._started = False

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    async def start(self) -> None:
        server = self.server
        server.lifespan = server.config.lifespan_class(server.config)
        await server.startup(sockets=[self.socket])
        self._started = True
        host, port = self.socket.getsockname()[:2]
        log.info("%s listening on %s:%d", self.name, host, port)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.server.shutdown(sockets=[self.socket])
        self.socket.close()
