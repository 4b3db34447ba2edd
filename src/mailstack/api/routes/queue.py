"""`/queue`: the mail Postfix holds, waiting for delivery or a retry. Admins only.

Read from Postfix's showq service (mailstack.api.showq), as `postqueue -j` does; a flush
triggers the queue manager as `postqueue -f` does. Deleting messages needs root
(`postsuper -d`) and is not offered here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request, Response

from mailstack.api.auth import Admin
from mailstack.api.schemas import QueuedMessageOut, QueuedRecipientOut
from mailstack.api.showq import ShowqError, flush_queue, read_queue
from mailstack.store import StoreUnavailable

router = APIRouter(prefix="/queue", tags=["queue"])


def _public(request: Request) -> Path:
    """Postfix's public/ folder (showq, qmgr)."""
    showq: Path | None = request.app.state.showq
    if showq is None:
        raise StoreUnavailable("no Postfix queue here (the API runs without a mail server)")
    return showq.parent


@router.post("/flush", status_code=204, summary="Try every queued message now")
def flush(request: Request, _: Admin) -> Response:
    """Retry times and destinations found down are ignored once; nothing is removed."""
    try:
        flush_queue(_public(request) / "qmgr")
    except ShowqError as exc:
        raise StoreUnavailable(str(exc)) from None
    return Response(status_code=204)


@router.get("", summary="Messages in the queue, with why each recipient still waits")
def list_queue(request: Request, _: Admin) -> list[QueuedMessageOut]:
    try:
        found = read_queue(_public(request) / "showq")
    except ShowqError as exc:
        raise StoreUnavailable(str(exc)) from None
    return [
        QueuedMessageOut(
            queue_id=message.queue_id,
            queue_name=message.queue_name,
            arrival_time=datetime.fromtimestamp(message.arrival_time, UTC),
            message_size=message.message_size,
            sender=message.sender,
            recipients=[
                QueuedRecipientOut(address=address, delay_reason=reason or None)
                for address, reason in message.recipients
            ],
        )
        for message in found
    ]
