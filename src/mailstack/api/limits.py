"""A bound on request bodies. FastAPI reads a body before it checks the bearer token, so
without this anyone who reaches the listener could make the worker hold any amount of
memory. The largest legitimate body is a Sieve script at the datastore's limit, JSON-encoded.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailstack.api.problems import problem
from mailstack.sieve import MAX_SCRIPT_BYTES

#: A 1 MiB script whose every character needs a JSON escape of two, plus the rest.
MAX_BODY_BYTES = 2 * MAX_SCRIPT_BYTES + 64 * 1024


class BodyLimit:
    """413 for a body over `limit`: at once from Content-Length, else while it streams in."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> str:
        return f"the request body is larger than {self.limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await problem(413, self._too_large())(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI passes an HTTPException from reading the body through as is
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, bounded, send)
