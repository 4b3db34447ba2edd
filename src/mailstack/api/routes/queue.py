"""`/queue`: the mail Postfix holds, waiting for delivery or a retry. Admins only.

Read from Postfix's showq service (mailstack.api.showq), as `postqueue -j` does. Retrying
and deleting messages need Postfix's own commands as root and are not offered here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request

from mailstack.api.auth import Admin
from mailstack.api.schemas import QueuedMessageOut, QueuedRecipientOut
from mailstack.api.showq import ShowqError, read_queue
from mailstack.store import StoreUnavailable

router = APIRouter(prefix="/queue", tags=["queue"])


@router.get("", summary="Messages in the queue, with why each recipient still waits")
def list_queue(request: Request, _: Admin) -> list[QueuedMessageOut]:
    showq: Path | None = request.app.state.showq
    if showq is None:
        raise StoreUnavailable("no Postfix queue here (the API runs without a mail server)")
    try:
        found = read_queue(showq)
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
