"""RFC 9457 problem details: every error of the API is `application/problem+json`.

The datastore's typed errors map to statuses here, in one place: `InvalidInput` 422 (naming
the field), `NotFound` 404, `Conflict` 409, `Forbidden` 403, an unreachable database or a
missing sievec 503. A bad request body or query gets the same shape, listing each field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailstack.errors import InvalidInput
from mailstack.sieve.check import SieveCheckUnavailable
from mailstack.store.errors import Conflict, Forbidden, NotFound, StoreUnavailable

log = logging.getLogger("mailstack.api")

MEDIA_TYPE = "application/problem+json"
REALM = "mailstack"
RETRY_AFTER_SECONDS = 30


class FieldError(BaseModel):
    field: str = Field(description="The request field at fault, e.g. `address` or `targets.1`.")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem. `type` is `about:blank`: the status says what kind it is."""

    type: str = "about:blank"
    title: str = Field(description="The HTTP status phrase.")
    status: int
    detail: str = Field(description="What is wrong, for people.")
    field: str | None = Field(
        default=None, description="With 422: the field at fault (the first, if several)."
    )
    errors: list[FieldError] | None = Field(default=None, description="With 422: every field.")


class Unauthorized(Exception):
    """No usable bearer token: answered 401 with `WWW-Authenticate: Bearer`."""

    def __init__(self, detail: str, *, invalid_token: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.invalid_token = invalid_token


def problem(
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        field=errors[0].field if errors else None,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def _field(location: tuple[Any, ...]) -> str:
    """`("body", "targets", 1)` -> `targets.1`; `("body",)` (a missing body) -> `body`."""
    parts = location[1:] if len(location) > 1 else location
    return ".".join(str(part) for part in parts)


#: Errors whose status depends only on their class (first match wins).
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (Forbidden, 403),
    (StoreUnavailable, 503),
    (SieveCheckUnavailable, 503),
)


def problem_for(exc: Exception) -> JSONResponse:
    """The problem response for an error the handlers are installed for."""
    if isinstance(exc, RequestValidationError):
        errors = [FieldError(field=_field(tuple(e["loc"])), message=e["msg"]) for e in exc.errors()]
        return problem(422, "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)
    if isinstance(exc, InvalidInput):
        return problem(422, str(exc), errors=[FieldError(field=exc.field, message=exc.message)])
    if isinstance(exc, Unauthorized):
        challenge = f'Bearer realm="{REALM}"'
        if exc.invalid_token:
            challenge += ', error="invalid_token"'
        return problem(401, exc.detail, headers={"WWW-Authenticate": challenge})
    if isinstance(exc, HTTPException):  # Starlette's own: no such route, wrong method
        return problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    status = next(code for kind, code in STATUS_OF if isinstance(exc, kind))
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return problem(status, str(exc), headers=headers)


async def _handle(_: Request, exc: Exception) -> JSONResponse:
    return problem_for(exc)


def install(app: FastAPI) -> None:
    """Answer every error mailstack raises on purpose, and the framework's, as a problem."""
    handled = (RequestValidationError, InvalidInput, Unauthorized, HTTPException)
    for kind in (*handled, *(kind for kind, _ in STATUS_OF)):
        app.add_exception_handler(kind, _handle)
    app.add_middleware(CatchAll)


class CatchAll:
    """Any other exception is a bug: logged with its traceback, answered 500 as a problem
    that tells the client nothing about the inside. (Starlette's own catch-all answers in
    plain text and re-raises, which makes the server drop the connection.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception:
            if started or scope["type"] != "http":
                raise
            log.exception("API request %s %s failed", scope["method"], scope["path"])
            response = problem(500, "internal error; the server's log has the details")
            await response(scope, receive, send)


def _response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


#: The error responses every authenticated operation may give, for the OpenAPI document.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _response("The body is not UTF-8 text"),
    401: _response("No bearer token, or an unknown or revoked one"),
    403: _response("The token may not read or change this"),
    404: _response("No such domain, user, alias, script or key"),
    409: _response("Duplicate, or still in use"),
    413: _response("The request body is over the limit (2 MiB and a little)"),
    422: _response("Bad input; `field` names it"),
    503: _response("The database (or sievec) is unavailable: retry later"),
}


@contextmanager
def renamed_fields(**names: str) -> Iterator[None]:
    """The datastore names arguments as the CLI does (`domain`); the API's body may call
    the same value otherwise (`name`): rename so the problem names the request's field."""
    try:
        yield
    except InvalidInput as exc:
        if exc.field not in names:
            raise
        raise InvalidInput(names[exc.field], exc.message) from None
