"""The Postfix queue as Postfix's showq service reports it (what `postqueue -j` shows),
and a flush as `postqueue -f` asks for it.

`postqueue -c DIR` refuses a configuration folder not named in /etc/postfix's
`alternate_config_directories` (it is setgid), so the worker asks showq directly over
`public/showq`, as postqueue does: the worker's user gets the `postdrop` group for that.

showq speaks Postfix's null-terminated attribute protocol: `name\\0value\\0` pairs, an
empty name ends a record. The first record announces the protocol; each following one is a
message (queue name, id, arrival time, size, sender, then `recipient`/`reason` pairs); an
empty record ends the list.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

PROTOCOL = "mail_queue_list_protocol"
#: Enough for a queue of many thousand messages; showq closes the stream at the end.
READ_TIMEOUT = 30.0


class ShowqError(OSError):
    """showq could not be asked, or answered something else than a queue listing."""


@dataclass
class QueuedMessage:
    queue_name: str
    queue_id: str
    arrival_time: int
    message_size: int
    sender: str
    recipients: list[tuple[str, str]] = field(default_factory=list)  # (address, reason)


def parse_showq(data: bytes) -> list[QueuedMessage]:
    """The messages of one showq answer (the whole stream)."""
    tokens = data.split(b"\0")
    records: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    position = 0
    while position < len(tokens) - 1:
        name = tokens[position].decode("utf-8", "replace")
        if name == "":
            records.append(current)
            current = []
            position += 1
            continue
        current.append((name, tokens[position + 1].decode("utf-8", "replace")))
        position += 2
    if not records or dict(records[0]).get("protocol") != PROTOCOL:
        raise ShowqError("showq did not announce the queue list protocol")
    return [_message(record) for record in records[1:] if record]


def _message(record: list[tuple[str, str]]) -> QueuedMessage:
    values = dict(record)
    try:
        message = QueuedMessage(
            values["queue_name"],
            values["queue_id"],
            int(values["time"]),
            int(values["size"]),
            values.get("sender", ""),
        )
    except (KeyError, ValueError) as exc:
        raise ShowqError(f"showq sent a record without {exc}") from None
    pending: str | None = None
    for name, value in record:
        if name == "recipient":
            pending = value
        elif name == "reason" and pending is not None:
            message.recipients.append((pending, value))
            pending = None
    return message


def read_queue(showq_socket: Path) -> list[QueuedMessage]:
    """Ask the running Postfix's showq for every queued message."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(READ_TIMEOUT)
            sock.connect(str(showq_socket))
            chunks = []
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
    except OSError as exc:
        raise ShowqError(f"cannot ask showq at {showq_socket}: {exc}") from None
    return parse_showq(b"".join(chunks))


#: qmgr's trigger requests: forget which destinations were found dead (F), then scan the
#: deferred and incoming queues ignoring the retry times (A, D) — what `postqueue -f` asks.
FLUSH_TRIGGER = b"FAD"


def flush_queue(qmgr_socket: Path) -> None:
    """Ask the running Postfix's queue manager to try every queued message now."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(READ_TIMEOUT)
            sock.connect(str(qmgr_socket))
            sock.sendall(FLUSH_TRIGGER)
    except OSError as exc:
        raise ShowqError(f"cannot reach the queue manager at {qmgr_socket}: {exc}") from None
