"""One view of the queue for the REST API and the web UI: list, flush, delete."""

from __future__ import annotations

from pathlib import Path

from mailstack.mailqueue.ids import check_queue_id
from mailstack.mailqueue.requests import DeleteRequests
from mailstack.mailqueue.showq import QueuedMessage, ShowqError, flush_queue, read_queue
from mailstack.store.errors import NotFound, StoreUnavailable

__all__ = ["MailQueue", "QueueUnavailable"]


class QueueUnavailable(StoreUnavailable):
    """Postfix's queue cannot be asked now (a 503, like a database outage)."""


class MailQueue:
    """The running Postfix's queue. `public` is its `public/` folder (showq, qmgr), None
    without a mail server; `deletes` None when nobody can delete (no supervisor)."""

    def __init__(self, public: Path | None, deletes: DeleteRequests | None = None) -> None:
        self.public = public
        self.deletes = deletes

    def _socket(self, name: str) -> Path:
        if self.public is None:
            raise QueueUnavailable("no Postfix queue here (it runs without a mail server)")
        return self.public / name

    def messages(self) -> list[QueuedMessage]:
        """Every queued message; StoreUnavailable while showq cannot be asked."""
        try:
            return read_queue(self._socket("showq"))
        except ShowqError as exc:
            raise QueueUnavailable(str(exc)) from None

    def flush(self) -> None:
        """Try every message now (retry times and dead destinations ignored once)."""
        try:
            flush_queue(self._socket("qmgr"))
        except ShowqError as exc:
            raise QueueUnavailable(str(exc)) from None

    def delete(self, queue_id: str) -> None:
        """Ask root to delete a queued message: InvalidInput for a malformed id, NotFound
        for one not in the queue now. Done within seconds, not when this returns."""
        check_queue_id(queue_id)
        if self.deletes is None:
            raise QueueUnavailable("deleting queued mail needs the server's supervisor")
        if all(message.queue_id != queue_id for message in self.messages()):
            raise NotFound(f"no message {queue_id} in the queue")
        try:
            self.deletes.request(queue_id)
        except OSError as exc:
            raise QueueUnavailable(f"cannot ask for the deletion: {exc.strerror}") from None
