"""The ManageSieve listener: one `Session` per client, all on one event loop.

It is a `mailstack.netserver.Listener`, so start/stop behave as every listener's do: `start()`
returns once listening (port 0 picks a free one), `stop()` closes the listener and every
open connection and may be called again.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailstack.managesieve.session import PRELOGIN_IDLE_TIMEOUT, Checker, Session, Settings
from mailstack.managesieve.wire import MAX_LINE, status
from mailstack.netserver import Address, Listener
from mailstack.sieve import MAX_SCRIPT_BYTES, SIEVE_EXTENSIONS, check_script
from mailstack.throttle import LoginThrottle

if TYPE_CHECKING:
    from mailstack.store import MailStore

MANAGESIEVE_PORT = 4190
IDLE_TIMEOUT = 600.0  # seconds without a command before the server says BYE (logged in)
MAX_CONNECTIONS = 200  # served at once, in all
MAX_PER_CLIENT = 10  # served at once, per client address
AUTH_FAILURE_DELAY = 1.0  # seconds before a failed login is answered, against guessing


class ManageSieveServer(Listener):
    """RFC 5804 server whose scripts live in mailstack's datastore.

    `store` is the datastore, or a function that opens it at the first login: the worker
    passes one, so that SQLAlchemy's ORM is loaded only once somebody uses ManageSieve.

    `ssl_context` enables STARTTLS; with it, logins are refused until TLS is up unless
    `allow_plaintext_auth` is set (meant for loopback tests). Uploaded scripts go through
    `checker` (by default Pigeonhole's sievec) and are refused with its message if invalid.
    """

    name = "managesieve"
    read_limit = MAX_LINE + 2

    def __init__(
        self,
        store: MailStore | Callable[[], MailStore],
        *,
        ssl_context: ssl.SSLContext | None = None,
        checker: Checker = check_script,
        max_script_bytes: int = MAX_SCRIPT_BYTES,
        allow_plaintext_auth: bool = False,
        idle_timeout: float = IDLE_TIMEOUT,
        auth_failure_delay: float = AUTH_FAILURE_DELAY,
        extensions: tuple[str, ...] = SIEVE_EXTENSIONS,
        max_connections: int | None = MAX_CONNECTIONS,
        max_per_client: int | None = MAX_PER_CLIENT,
        prelogin_idle_timeout: float = PRELOGIN_IDLE_TIMEOUT,
        throttle: LoginThrottle | None = None,
    ) -> None:
        super().__init__(max_connections=max_connections, max_per_client=max_per_client)
        if not 0 < max_script_bytes <= MAX_SCRIPT_BYTES:
            raise ValueError(f"max_script_bytes must be between 1 and {MAX_SCRIPT_BYTES}")
        self.settings = Settings(
            open_store=store if callable(store) else lambda: store,
            ssl_context=ssl_context,
            checker=checker,
            max_script_bytes=max_script_bytes,
            allow_plaintext_auth=allow_plaintext_auth,
            idle_timeout=idle_timeout,
            auth_failure_delay=auth_failure_delay,
            extensions=extensions,
            throttle=throttle or LoginThrottle(),
            prelogin_idle_timeout=prelogin_idle_timeout,
        )

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = MANAGESIEVE_PORT,
        *,
        path: str | os.PathLike[str] | None = None,
        mode: int = 0o660,
    ) -> Address:
        """Listen on `host`:`port` (0: any free port; see `port`), or on a Unix socket."""
        return await super().start(host=host, port=port, path=path, mode=mode)

    async def refuse(self, writer: asyncio.StreamWriter) -> None:
        writer.write(status("BYE", "too many connections, try again later"))
        await writer.drain()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Session(self.settings, reader, writer).run()
