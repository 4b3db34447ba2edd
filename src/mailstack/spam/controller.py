"""A small client of rspamd's controller over its Unix socket: learn a message as spam or
ham for one user (`Deliver-To`, rspamd's per-user statistics).

Plain HTTP/1.0 on an asyncio Unix connection: two endpoints, one request each, so no HTTP
library is loaded into the worker for it.
"""

from __future__ import annotations

import asyncio
import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["spam", "ham"]


class Outcome(enum.Enum):
    LEARNED = "learned"
    ALREADY = "already"  # rspamd's learn cache knew the message in this class (HTTP 208)
    REFUSED = "refused"  # e.g. too few tokens, or already confidently in the class


@dataclass(frozen=True)
class Learned:
    outcome: Outcome
    reason: str = ""


class ControllerUnavailable(OSError):
    """rspamd's controller did not answer: try again later."""


def _header_value(value: str) -> str:
    if not value or any(c in value for c in "\r\n\0"):
        raise ValueError(f"cannot send {value!r} in a header")
    return value


def learn_request(kind: Kind, user: str, message: bytes, bulk: bool = False) -> bytes:
    """The HTTP request that learns `message` as `kind` for `user`."""
    headers = [
        f"POST /learn{kind} HTTP/1.0",
        "Host: localhost",
        f"Deliver-To: {_header_value(user)}",
        f"Content-Length: {len(message)}",
        "Connection: close",
    ]
    if bulk:  # learn even what the classifier is sure of already (nightly pass)
        headers.append("Learn-Type: bulk")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + message


def read_answer(raw: bytes) -> Learned:
    """What rspamd's answer means; 208 (already learned) counts as done."""
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(None, 2)[1])
    except (IndexError, ValueError):
        raise ControllerUnavailable(f"not an HTTP answer: {head[:80]!r}") from None
    if status == 200:
        return Learned(Outcome.LEARNED)
    if status == 208:
        return Learned(Outcome.ALREADY)
    try:
        reason = str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        reason = body[:200].decode(errors="replace")
    if status >= 500:
        raise ControllerUnavailable(f"rspamd answered {status}: {reason}")
    return Learned(Outcome.REFUSED, f"{status} {reason}".strip())


async def learn(
    socket: Path,
    kind: Kind,
    user: str,
    message: bytes,
    *,
    bulk: bool = False,
    timeout: float = 30.0,
) -> Learned:
    """Learn one message; ControllerUnavailable when rspamd cannot be asked now."""
    request = learn_request(kind, user, message, bulk)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(socket))
            try:
                writer.write(request)
                await writer.drain()
                raw = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        raise ControllerUnavailable(f"rspamd's controller at {socket}: {exc}") from exc
    return read_answer(raw)
