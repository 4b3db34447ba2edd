"""Postfix's showq answer (null-terminated attributes) as the API's queue listing reads it."""

from __future__ import annotations

import pytest

from mailstack.mailqueue.showq import QueuedMessage, ShowqError, parse_showq

HELLO = b"protocol\0mail_queue_list_protocol\0\0"


def record(*pairs: tuple[str, str]) -> bytes:
    return b"".join(f"{n}\0{v}\0".encode() for n, v in pairs) + b"\0"


def test_messages_with_their_recipients_and_reasons() -> None:
    first = record(
        ("queue_name", "deferred"), ("queue_id", "4AB1"), ("time", "1795709710"),
        ("size", "384"), ("forced_expire", "0"), ("sender", "a@remote.test"),
        ("recipient", "x@example.com"), ("reason", "connect to 127.0.0.1: refused"),
        ("recipient", "y@example.com"), ("reason", ""),
    )  # fmt: skip
    second = record(
        ("queue_name", "active"), ("queue_id", "4AB2"), ("time", "1"), ("size", "9"),
        ("sender", ""), ("recipient", "z@example.com"), ("reason", ""),
    )  # fmt: skip
    assert parse_showq(HELLO + first + second + b"\0") == [
        QueuedMessage(
            "deferred", "4AB1", 1795709710, 384, "a@remote.test",
            [("x@example.com", "connect to 127.0.0.1: refused"), ("y@example.com", "")],
        ),
        QueuedMessage("active", "4AB2", 1, 9, "", [("z@example.com", "")]),
    ]  # fmt: skip


def test_an_empty_queue() -> None:
    assert parse_showq(HELLO + b"\0") == []


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"protocol\0other\0\0", HELLO + record(("queue_name", "x")) + b"\0"],
)
def test_anything_else_is_an_error(data: bytes) -> None:
    with pytest.raises(ShowqError):
        parse_showq(data)
