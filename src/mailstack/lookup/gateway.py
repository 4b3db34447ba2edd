"""How the servers reach the store: inline on the event loop, or in worker threads.

SQLite is a local file read in WAL mode: a lookup takes tens of microseconds and never
waits for a writer, so it runs inline; handing it to a thread would cost more than the
query (measured: ~2.5x the throughput inline). PostgreSQL is a network round trip that a
sick server can stretch indefinitely, so its reads run in worker threads with a deadline:
past `timeout` the request is answered with a temporary failure and the loop stays free.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from mailstack.lookup.resolver import Resolver
from mailstack.store.errors import StoreUnavailable

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
DEFAULT_THREADS = 4


def default_workers(resolver: Resolver) -> int:
    """0 (inline) for SQLite, a few threads for a networked database."""
    return 0 if resolver.engine.url.get_backend_name() == "sqlite" else DEFAULT_THREADS


class StoreGateway:
    """The lookup servers' only way to the store."""

    def __init__(
        self, resolver: Resolver, *, workers: int | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.resolver = resolver
        self.timeout = timeout
        self.workers = default_workers(resolver) if workers is None else workers
        self._executor = (
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lookup-db")
            if self.workers
            else None
        )
        self._closed = False

    @property
    def inline(self) -> bool:
        """Whether calls run on the caller's thread (SQLite): `call_inline` may be used."""
        return self._executor is None

    def call_inline(self, function: Callable[..., T], *args: object) -> T:
        """`function(resolver, *args)` right here; only for an inline gateway."""
        if self._closed:
            raise StoreUnavailable("store gateway closed")
        return function(self.resolver, *args)

    async def call(self, function: Callable[..., T], *args: object) -> T:
        """`function(resolver, *args)`; StoreUnavailable on a store error or the deadline."""
        if self._closed:
            raise StoreUnavailable("store gateway closed")
        if self._executor is None:
            return function(self.resolver, *args)
        loop = asyncio.get_running_loop()
        job = functools.partial(function, self.resolver, *args)
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, job), self.timeout)
        except TimeoutError:
            raise StoreUnavailable(f"store did not answer within {self.timeout:g}s") from None
        except RuntimeError as exc:  # executor shut down under us
            raise StoreUnavailable(f"store gateway closed: {exc}") from None

    def close(self) -> None:
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self.resolver.close()
