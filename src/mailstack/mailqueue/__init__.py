"""Postfix's mail queue as admins see it: listed through showq, flushed through qmgr, and
messages deleted by root's `postsuper -d` at the worker's request.

Light on purpose (no FastAPI, no Jinja2): the REST API, the web UI and the root-side
`mailstack queue` commands all import it.
"""

from mailstack.mailqueue.ids import check_queue_id, is_queue_id
from mailstack.mailqueue.queue import MailQueue, QueueUnavailable
from mailstack.mailqueue.requests import DeleteRequests
from mailstack.mailqueue.showq import QueuedMessage, ShowqError

__all__ = [
    "DeleteRequests",
    "MailQueue",
    "QueueUnavailable",
    "QueuedMessage",
    "ShowqError",
    "check_queue_id",
    "is_queue_id",
]
