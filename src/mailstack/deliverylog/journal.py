"""The supervisor's side of the delivery log: log lines in, JSON lines out (stdlib only).

`observe` runs for every daemon line, so it decides on the program name first (one
`rpartition` and a comparison for every line that is not about a delivery) and parses only
the lines it keeps, about five per message:

- smtpd `QUEUEID: client=..., sasl_username=USER`: who submitted the message (outbound);
- qmgr `QUEUEID: from=<SENDER>, ...` (repeated at every retry) and `QUEUEID: removed`;
- smtp/lmtp `QUEUEID: to=<...>, relay=..., dsn=..., status=sent (REPLY)`: one event;
- smtpd `reject:` / `milter-reject:` with `from=<...> to=<...>`: a refused message, kept
  only when the recipient exists (not `5.1.1` unknown users, not relay attempts);
- Dovecot `lmtp(USER)<pid><SESSION>: ... saved mail to BOX` or `stored mail into mailbox
  'BOX'`: which folder got it. LMTP's reply to Postfix names the same SESSION, and the
  reader joins the two, since the lines come through different pipes in any order.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from mailstack.deliverylog import CURRENT, PREVIOUS, ROTATE_BYTES
from mailstack.runtime.logparse import LineObserver, LogRecord, delivery_fields

log = logging.getLogger(__name__)

#: Messages whose sender and login are remembered until qmgr says `removed`; beyond this
#: the oldest are forgotten (a deferred message's sender comes back at its next retry).
PENDING_LIMIT = 10_000
_SKIPPED_REJECTS = (" 5.1.1 ", "Relay access denied")
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def _address(text: str) -> str:
    """`<Alice@Example.COM>` or `Alice@Example.COM` -> `alice@example.com`."""
    return text.strip().removeprefix("<").removesuffix(">").lower()


def _remember(table: dict[str, str], key: str, value: str) -> None:
    table[key] = value
    if len(table) > PENDING_LIMIT:
        del table[next(iter(table))]


class DeliveryJournal:
    """Appends delivery events to `folder`/deliveries.jsonl, rotating at `rotate_bytes`.

    The folder is opened once: files are then opened and renamed relative to it, without
    following links, so a folder or file swapped later cannot send root's writes elsewhere.
    """

    def __init__(
        self,
        folder: Path,
        rotate_bytes: int = ROTATE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rotate_bytes = rotate_bytes
        self.clock = clock
        self.senders: dict[str, str] = {}
        self.logins: dict[str, str] = {}
        self.folder = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.fd = os.open(CURRENT, _FLAGS, 0o640, dir_fd=self.folder)
        self.size = os.fstat(self.fd).st_size
        self.failed = False

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.folder)

    def observe(self, record: LogRecord) -> None:
        service = record.service
        if service == "dovecot":
            if record.message.startswith("lmtp("):
                self._mailbox(record.message)
            return
        program = service.rpartition("/")[2]
        if program in ("smtp", "lmtp"):
            self._delivery(record, program)
        elif program == "qmgr":
            self._queue(record.message)
        elif program == "smtpd":
            self._smtpd(record.message)

    # -- the lines --------------------------------------------------------------------------

    def _queue(self, message: str) -> None:
        queue_id, _, rest = message.partition(": ")
        if rest.startswith("from=<"):
            _remember(self.senders, queue_id, _address(rest[5 : rest.find(">") + 1]))
        elif rest == "removed":
            self.senders.pop(queue_id, None)
            self.logins.pop(queue_id, None)

    def _smtpd(self, message: str) -> None:
        head, _, rest = message.partition(": ")
        if rest.startswith("client="):
            _, found, login = rest.partition(", sasl_username=")
            if found:
                _remember(self.logins, head, _address(login.partition(", ")[0]))
        elif rest.startswith(("reject: ", "milter-reject: ")):
            self._rejected(head, rest)

    def _rejected(self, queue_id: str, text: str) -> None:
        """`reject: RCPT from host[addr]: 550 5.7.1 <to>: why; from=<a> to=<b> proto=...`"""
        if any(skipped in text for skipped in _SKIPPED_REJECTS):
            return
        reply, _, envelope = text.rpartition("; from=<")
        sender, _, rest = envelope.partition("> to=<")
        recipient = rest.partition(">")[0]
        if not recipient:
            return
        self._write(
            {
                "kind": "delivery",
                "time": round(self.clock(), 3),
                "queue_id": "" if queue_id == "NOQUEUE" else queue_id,
                "from": _address(sender),
                "to": _address(recipient),
                "status": "rejected",
                "reply": reply.partition("]: ")[2] or reply,
                "via": "smtpd",
            }
        )

    def _delivery(self, record: LogRecord, program: str) -> None:
        fields = record.fields or delivery_fields(record.message)
        status = fields.get("status")
        queue_id = fields.get("queue_id")
        if not status or not queue_id or "to" not in fields:
            return
        tail = record.message.rpartition(f"status={status}")[2].strip()
        event = {
            "kind": "delivery",
            "time": round(self.clock(), 3),
            "queue_id": queue_id,
            "from": self.senders.get(queue_id, ""),
            "to": _address(fields["to"]),
            "status": status,
            "reply": tail.removeprefix("(").removesuffix(")"),
            "via": program,
            "relay": fields.get("relay", ""),
            "dsn": fields.get("dsn", ""),
        }
        if "orig_to" in fields:
            event["orig_to"] = _address(fields["orig_to"])
        login = self.logins.get(queue_id)
        if login:
            event["login"] = login
        self._write(event)

    def _mailbox(self, message: str) -> None:
        """`lmtp(bob@x)<41><SESSION>: [sieve: ]msgid=<..>: saved mail to INBOX` (or
        `...stored mail into mailbox 'Boss'`)."""
        if message.endswith("'") and "stored mail into mailbox '" in message:
            mailbox = message.rpartition(" mailbox '")[2][:-1]
        elif "saved mail to " in message:
            mailbox = message.rpartition("saved mail to ")[2]
        else:
            return
        user, _, rest = message[5:].partition(")<")
        session = rest.partition("><")[2].partition(">")[0]
        if user and session:
            self._write(
                {
                    "kind": "mailbox",
                    "time": round(self.clock(), 3),
                    "user": _address(user),
                    "session": session,
                    "mailbox": mailbox,
                }
            )

    # -- the file ---------------------------------------------------------------------------

    def _write(self, event: dict[str, object]) -> None:
        line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        try:
            if self.size + len(line) > self.rotate_bytes:
                self._rotate()
            os.write(self.fd, line)
        except OSError as exc:  # a full disk must not stop the log pipeline
            if not self.failed:
                log.error("cannot write the delivery log: %s", exc)
            self.failed = True
            return
        self.failed = False
        self.size += len(line)

    def _rotate(self) -> None:
        os.rename(CURRENT, PREVIOUS, src_dir_fd=self.folder, dst_dir_fd=self.folder)
        os.close(self.fd)
        self.fd = os.open(CURRENT, _FLAGS | os.O_EXCL, 0o640, dir_fd=self.folder)
        self.size = 0


def with_delivery_journal(folder: str | None, observe: LineObserver | None) -> LineObserver | None:
    """`observe` plus a journal in `folder` (None: no journal, `observe` unchanged)."""
    if folder is None:
        return observe
    try:
        journal = DeliveryJournal(Path(folder))
    except OSError as exc:
        log.error("no delivery log: cannot open %s: %s", folder, exc)
        return observe
    if observe is None:
        return journal.observe
    first = observe

    def both(record: LogRecord) -> None:
        first(record)
        journal.observe(record)

    return both
