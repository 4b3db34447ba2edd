"""The worker's side of the delivery log: one user's recent deliveries, newest first.

Read when asked (a page or an API call), not followed: the two files hold at most
2 x ROTATE_BYTES, and a line is decoded only when the user's address, spelt as the journal
spells it, occurs in it, so a request costs a few milliseconds and the worker keeps nothing
in memory between requests.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from mailstack.deliverylog import CURRENT, PREVIOUS, ROTATE_BYTES

MAX_EVENTS = 200  # per request, and so per user

Status = Literal["sent", "deferred", "bounced", "rejected"]
Direction = Literal["in", "out"]


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt to one recipient, as the user concerned sees it."""

    time: datetime
    direction: Direction  # in: to the user's mailbox; out: sent by the user (logged in)
    queue_id: str
    sender: str
    recipient: str
    original_recipient: str | None  # the alias it was sent to, when it was one
    status: Status
    mailbox: str | None  # the folder it was filed into, when delivered here
    relay: str | None
    reply: str  # what the next hop answered (or why it could not be reached)


def _lines(folder: Path, needle: bytes) -> list[bytes]:
    """The journal's lines holding `needle`, oldest first."""
    found: list[bytes] = []
    for name in (PREVIOUS, CURRENT):
        try:
            with (folder / name).open("rb") as handle:
                handle.seek(0, 2)
                size = handle.tell()
                # never more than a full file: one that grew past it is read from its end
                handle.seek(max(0, size - 2 * ROTATE_BYTES))
                data = handle.read()
        except FileNotFoundError:
            continue
        found += [line for line in data.split(b"\n") if needle in line]
    return found


def _session(reply: str) -> str:
    """The LMTP session id in Dovecot's reply `250 2.0.0 <bob@x> SESSION Saved`."""
    return reply.partition("> ")[2].partition(" ")[0]


def _delivery(event: dict[str, Any], address: str, mailbox: str | None) -> Delivery:
    relay = event.get("relay")  # Postfix says `none` when no next hop answered
    return Delivery(
        time=datetime.fromtimestamp(float(event["time"]), UTC),
        direction="in" if event["to"] == address else "out",
        queue_id=str(event.get("queue_id", "")),
        sender=str(event.get("from", "")),
        recipient=str(event["to"]),
        original_recipient=event.get("orig_to"),
        status=event["status"],
        mailbox=mailbox,
        relay=str(relay) if relay and relay != "none" else None,
        reply=str(event.get("reply", "")),
    )


def read_deliveries(folder: Path, address: str, limit: int = MAX_EVENTS) -> list[Delivery]:
    """The last `limit` (at most MAX_EVENTS) deliveries to or by `address` (canonical),
    newest first: mail delivered to their mailbox or refused for them, and mail they sent
    after logging in (outbound, or to another user here)."""
    limit = max(0, min(limit, MAX_EVENTS))
    needle = json.dumps(address).encode()
    events: deque[dict[str, Any]] = deque(maxlen=limit)
    mailboxes: dict[str, str] = {}
    for line in _lines(folder, needle):
        try:
            event = json.loads(line)
        except ValueError:  # a line cut short by a full disk
            continue
        if not isinstance(event, dict):
            continue
        if event.get("kind") == "mailbox" and event.get("user") == address:
            mailboxes[str(event.get("session"))] = str(event.get("mailbox"))
        elif event.get("kind") == "delivery" and address in (event.get("to"), event.get("login")):
            events.append(event)
    found = []
    for event in reversed(events):
        mine = event.get("via") == "lmtp" and event["to"] == address
        mailbox = mailboxes.get(_session(str(event.get("reply", "")))) if mine else None
        found.append(_delivery(event, address, mailbox))
    return found
