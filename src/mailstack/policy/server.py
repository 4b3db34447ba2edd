"""The greylisting policy server: Postfix's `check_policy_service` asks it about each RCPT.

One connection per smtpd process, kept open for many requests (SMTPD_POLICY_README). Each
request is judged by `Greylist` in a worker thread with a deadline. The datastore is used
even for SQLite, because a write may wait on another process's lock. Greylisting is not
worth losing mail, so the server FAILS OPEN: if the store errs or misses the deadline, or
the check itself fails, the answer is `DUNNO` and a warning is logged. A malformed request
is logged and the connection closed, without an answer, as the protocol asks. Postfix then
applies the service's `default_action` (which should be DUNNO too, see the package
docstring).

Expired records are purged in the background at most once per `purge_interval`, after a
reply has been sent, never while a request waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Engine

from mailstack.netserver import Listener
from mailstack.policy.greylist import DUNNO, Greylist, GreylistConfig, Verdict
from mailstack.policy.protocol import ProtocolError, Request, RequestDecoder, encode_reply
from mailstack.policy.state import SqlState
from mailstack.store.errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 3.0  # seconds for one decision, store round trips included
IDLE_TIMEOUT = 600.0  # between requests (Postfix closes idle connections after 300 s)
REQUEST_TIMEOUT = 30.0  # for the rest of a request once its first bytes have arrived
READ_SIZE = 4096
POLICY_REQUEST = "smtpd_access_policy"


class PolicyGateway:
    """Runs store work in its own threads with a deadline: past `timeout`, or after
    `close()`, `call` raises StoreUnavailable (the thread finishes its job on its own)."""

    def __init__(self, *, workers: int, timeout: float) -> None:
        if workers < 1:
            raise ValueError("a policy gateway needs at least one thread")
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="policy-db")
        self._closed = False

    async def call(self, function: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreUnavailable("policy gateway closed")
        loop = asyncio.get_running_loop()
        job = functools.partial(function, *args)
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, job), self.timeout)
        except TimeoutError:
            raise StoreUnavailable(f"store did not answer within {self.timeout:g}s") from None
        except RuntimeError as exc:  # executor shut down under us
            raise StoreUnavailable(f"policy gateway closed: {exc}") from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._executor.shutdown(wait=False, cancel_futures=True)


def default_workers(engine: Engine) -> int:
    """SQLite takes one writer at a time anyway; PostgreSQL gets a second thread."""
    return 1 if engine.dialect.name == "sqlite" else 2


class GreylistPolicy(Listener):
    """`GreylistPolicy(engine, GreylistConfig(...))`; `await start(path=..., mode=0o666)` or
    `start(host=..., port=...)`; `await stop()` (idempotent, and final: the threads and
    the store connections are closed)."""

    name = "greylist-policy"

    def __init__(
        self,
        engine: Engine,
        config: GreylistConfig | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        workers: int | None = None,
        clock: Callable[[], float] = time.time,
        idle_timeout: float = IDLE_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int | None = None,
    ) -> None:
        super().__init__(max_connections=max_connections)
        self.state = SqlState(engine)
        self.greylist = Greylist(self.state, config, clock=clock)
        self.gateway = PolicyGateway(
            workers=default_workers(engine) if workers is None else workers, timeout=timeout
        )
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self._purge_task: asyncio.Task[None] | None = None

    @property
    def config(self) -> GreylistConfig:
        return self.greylist.config

    async def stop(self) -> None:
        await super().stop()
        task, self._purge_task = self._purge_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.gateway.close()
        self.state.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = RequestDecoder()
        while True:
            waiting = self.request_timeout if decoder.pending else self.idle_timeout
            try:
                chunk = await asyncio.wait_for(reader.read(READ_SIZE), waiting)
            except TimeoutError:
                if decoder.pending:
                    log.warning("%s: closing connection: request incomplete", self.name)
                return
            if not chunk:
                if decoder.pending:
                    log.warning("%s: connection closed inside a request", self.name)
                return
            fault: ProtocolError | None = None
            try:
                requests = decoder.feed(chunk)
            except ProtocolError as exc:
                fault, requests = exc, exc.requests
            for request in requests:  # the well-formed ones before a fault are answered
                writer.write(encode_reply(await self.respond(request)))
            if requests:
                await writer.drain()
                self._purge_if_due()
            if fault is not None:
                log.warning("%s: closing connection after bad request: %s", self.name, fault)
                return

    async def respond(self, request: Request) -> str:
        """The action for one request; never raises: on any failure the mail passes."""
        kind = request.get("request")
        if kind != POLICY_REQUEST:
            log.warning("%s: unknown request type %r, answering DUNNO", self.name, kind)
            return DUNNO
        try:
            verdict = await self.gateway.call(self.greylist.check, request)
        except StoreUnavailable as exc:
            log.warning("%s: store unavailable, not greylisting (DUNNO): %s", self.name, exc)
            return DUNNO
        except Exception:  # a bug must not cost mail: fail open, loudly
            log.exception("%s: greylisting failed, not greylisting (DUNNO)", self.name)
            return DUNNO
        self._log(verdict, request)
        return verdict.action

    def _log(self, verdict: Verdict, request: Request) -> None:
        query = verdict.query
        level = logging.INFO if verdict.judged else logging.DEBUG
        if query is None:
            log.debug("%s: pass (%s)", self.name, verdict.reason)
            return
        log.log(
            level,
            "%s: %s (%s): client=%s[%s] sender=<%s> recipient=<%s>",
            self.name,
            "defer" if verdict.greylisted else "pass",
            verdict.reason,
            query.client_name or "unknown",
            query.address,
            request.get("sender", ""),
            request.get("recipient", ""),
        )

    def _purge_if_due(self) -> None:
        running = self._purge_task is not None and not self._purge_task.done()
        if running or self._server is None or not self.greylist.purge_due():
            return
        self._purge_task = asyncio.get_running_loop().create_task(self._purge())

    async def _purge(self) -> None:
        try:
            removed = await self.gateway.call(self.greylist.purge)
        except StoreUnavailable as exc:
            log.warning("%s: could not purge expired records: %s", self.name, exc)
        except Exception:
            log.exception("%s: purging expired records failed", self.name)
        else:
            if removed:
                log.info("%s: purged %d expired greylist records", self.name, removed)
