"""`/queue`: the mail Postfix holds, waiting for delivery or a retry. Admins only.

Read from Postfix's showq service (mailstack.mailqueue), as `postqueue -j` does; a flush
triggers the queue manager as `postqueue -f` does; a delete is handed to root's
`postsuper -d` through the supervisor (the worker is not root).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from mailstack.api.auth import Admin
from mailstack.api.schemas import QueuedMessageOut, QueuedRecipientOut
from mailstack.mailqueue import MailQueue

router = APIRouter(prefix="/queue", tags=["queue"])


def _queue(request: Request) -> MailQueue:
    found: MailQueue = request.app.state.queue
    return found


@router.post("/flush", status_code=204, summary="Try every queued message now")
def flush(request: Request, _: Admin) -> Response:
    """Retry times and destinations found down are ignored once; nothing is removed."""
    _queue(request).flush()
    return Response(status_code=204)


@router.get("", summary="Messages in the queue, with why each recipient still waits")
def list_queue(request: Request, _: Admin) -> list[QueuedMessageOut]:
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
        for message in _queue(request).messages()
    ]


@router.delete(
    "/{queue_id}",
    status_code=202,
    summary="Delete a queued message (202: done within seconds)",
    responses={202: {"description": "Accepted: root deletes it within seconds"}},
)
def delete_message(queue_id: str, request: Request, _: Admin) -> Response:
    """The message is removed by `postsuper -d` as root, which the server runs for the API
    within seconds: 202 means accepted, and `GET /queue` stops listing it once done. A
    malformed id is 422, an id not in the queue now 404. No bounce is sent."""
    _queue(request).delete(queue_id)
    return Response(status_code=202)
