"""Keeping a valid access token: the refresh_token grant and the rules around it.

The HTTP client is httpx (async): the refresh runs on the same event loop that serves
SMTP, so a blocking client (urllib) would stall every delivery while it waits; httpx is
well kept, verifies TLS against certifi by default, honours HTTPS_PROXY, has separate
connect/read timeouts, and its exceptions split "could not ask" (TransportError) from
"asked and got an answer", which is exactly the 451-versus-454 split we need.

Rules:
- refresh ahead of expiry (5 minutes by default) so a token never dies mid-session;
- concurrent deliveries share one in-flight refresh (a task all callers await);
- a token the relay host rejected is refreshed once, unless someone already did;
- a rotated refresh token from the endpoint is kept;
- after a refused refresh (revoked token) nothing is retried until the token file
  changes, and after an outage the endpoint is left alone for `retry_after` seconds, so a
  queue run of a thousand messages does not hammer the endpoint;
- the token file is re-read when it changes on disk, so fixing it by hand takes effect
  on the next delivery without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from mailstack.xoauth2.errors import (
    TokenEndpointUnavailable,
    TokenFileError,
    TokenRefreshError,
    XOAuth2Error,
)
from mailstack.xoauth2.tokens import Signature, Tokens, TokenStore
from mailstack.xoauth2.trace import Redactor

log = logging.getLogger(__name__)

_DEFAULT_LIFETIME = 3600
_MAX_DESCRIPTION = 200


@dataclass(frozen=True)
class Grant:
    """What a successful refresh returned."""

    access_token: str
    expires_in: float
    refresh_token: str | None


class TokenEndpoint:
    """Posts the OAuth2 refresh_token grant (RFC 6749 section 6) to one token endpoint."""

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        http: httpx.AsyncClient,
        *,
        scope: str | None = None,
        redact: Redactor | None = None,
    ) -> None:
        self.url = url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._http = http
        self._redact = redact or Redactor(client_id, client_secret)

    async def refresh(self, refresh_token: str) -> Grant:
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "refresh_token": refresh_token,
        }
        if self._scope:
            form["scope"] = self._scope
        try:
            response = await self._http.post(self.url, data=form)
        except httpx.TransportError as exc:
            raise TokenEndpointUnavailable(
                f"cannot reach token endpoint {self.url}: {type(exc).__name__}"
            ) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TokenEndpointUnavailable(
                f"token endpoint {self.url} answered HTTP {response.status_code}"
            )
        body = _json_object(response)
        if response.status_code != 200:
            raise TokenRefreshError(
                f"token endpoint {self.url} refused the refresh token: "
                f"HTTP {response.status_code} {self._describe(body)}"
            )
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise TokenRefreshError(f"token endpoint {self.url} sent no access_token")
        rotated = body.get("refresh_token")
        return Grant(
            access_token=access,
            expires_in=_seconds(body.get("expires_in")),
            refresh_token=rotated if isinstance(rotated, str) and rotated else None,
        )

    def _describe(self, body: dict[str, object]) -> str:
        """`error (error_description)`, cleaned: the text comes from outside."""
        error = str(body.get("error") or "no error code")
        description = body.get("error_description")
        text = f"{error} ({description})" if description else error
        text = "".join(ch if ch.isprintable() else " " for ch in text)[:_MAX_DESCRIPTION]
        return self._redact(text)


def _json_object(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _seconds(value: object) -> float:
    if not isinstance(value, int | float | str):
        return _DEFAULT_LIFETIME
    try:
        seconds = float(value)
    except ValueError:
        return _DEFAULT_LIFETIME
    return seconds if math.isfinite(seconds) and seconds > 0 else _DEFAULT_LIFETIME


@dataclass
class _Failure:
    error: XOAuth2Error
    signature: Signature | None
    until: float


class TokenManager:
    """Hands out a valid access token, refreshing it through the endpoint when needed."""

    def __init__(
        self,
        store: TokenStore,
        endpoint: TokenEndpoint,
        *,
        margin: float = 300.0,
        retry_after: float = 10.0,
        initial: Tokens | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._endpoint = endpoint
        self._margin = margin
        self._retry_after = retry_after
        self._initial = initial
        self._clock = clock
        self._tokens: Tokens | None = None
        self._signature: Signature | None = None
        self._inflight: asyncio.Task[str] | None = None
        self._failure: _Failure | None = None
        self.refreshes = 0  # completed refresh requests, for metrics and tests
        self.waiting = 0  # callers currently waiting on the in-flight refresh

    def secrets(self) -> list[str]:
        """Current token values, for the redactor."""
        if self._tokens is None:
            return []
        return [self._tokens.access_token, self._tokens.refresh_token]

    def ensure_file(self) -> bool:
        """Create the token file from the initial tokens if it is absent; True if created."""
        if self._initial is None or self.store.signature() is not None:
            return False
        created = self.store.create(self._initial)
        if created:
            log.info("xoauth2 token file %s created from the initial tokens", self.store.path)
        return created

    async def access_token(self, *, rejected: str | None = None) -> str:
        """A token to authenticate with; `rejected` is one the relay host just refused."""
        tokens = self._current()
        now = self._clock()
        if tokens.fresh(now, self._margin) and tokens.access_token != rejected:
            return tokens.access_token
        if self._inflight is None:
            failure = self._failure
            if failure and failure.signature == self._signature and now < failure.until:
                raise failure.error
            self._inflight = asyncio.create_task(self._refresh(tokens))
            self._inflight.add_done_callback(_retrieve)
        self.waiting += 1
        try:
            return await asyncio.shield(self._inflight)
        finally:
            self.waiting -= 1

    async def close(self) -> None:
        """Cancel a refresh still in flight (at shutdown)."""
        task, self._inflight = self._inflight, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, XOAuth2Error):
                await task

    def _current(self) -> Tokens:
        signature = self.store.signature()
        if signature is None and self.ensure_file():
            signature = self.store.signature()
        if signature is None:
            self._tokens, self._signature = None, None
            raise TokenFileError(
                f"token file {self.store.path} does not exist: create it, or set "
                "XOAUTH2_INITIAL_ACCESS_TOKEN and XOAUTH2_INITIAL_REFRESH_TOKEN"
            )
        if signature != self._signature or self._tokens is None:
            self._tokens = self.store.load()
            self._signature = signature
        return self._tokens

    async def _refresh(self, tokens: Tokens) -> str:
        signature = self._signature
        try:
            grant = await self._endpoint.refresh(tokens.refresh_token)
        except TokenEndpointUnavailable as exc:
            self._failure = _Failure(exc, signature, self._clock() + self._retry_after)
            raise
        except TokenRefreshError as exc:
            self._failure = _Failure(exc, signature, math.inf)
            raise
        finally:
            self._inflight = None
        self.refreshes += 1
        renewed = tokens.renewed(
            grant.access_token, self._clock() + grant.expires_in, grant.refresh_token
        )
        self._tokens, self._failure = renewed, None
        try:
            self.store.save(renewed)
        except TokenFileError as exc:
            # Deliver with the new token anyway; a rotated refresh token now lives only in
            # memory, which is why this is logged loudly.
            log.error("xoauth2 token refreshed but not saved: %s", exc)
        else:
            self._signature = self.store.signature()
        log.debug(
            "xoauth2 token refreshed through %s (refresh token %s)",
            self._endpoint.url,
            "rotated" if grant.refresh_token else "kept",
        )
        return renewed.access_token


def _retrieve(task: asyncio.Task[str]) -> None:
    """Mark the task's exception as seen even if every waiter was cancelled."""
    if not task.cancelled():
        task.exception()
