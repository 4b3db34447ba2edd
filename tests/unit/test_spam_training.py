"""The pure parts of per-user spam training: the controller's request and answers, the
learning spool's file format, and the daily schedule of the training pass."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailstack.runtime.supervisor import seconds_until
from mailstack.settings.values import parse_daily_time
from mailstack.spam.controller import (
    ControllerUnavailable,
    Outcome,
    learn_request,
    read_answer,
)
from mailstack.spam.spool import BadSpoolFile, parse_entry


def test_a_learn_request_names_the_user_and_the_class() -> None:
    request = learn_request("spam", "alice@example.com", b"Subject: x\r\n\r\nbody")
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /learnspam HTTP/1.0"
    assert "Deliver-To: alice@example.com" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert "Learn-Type: bulk" not in lines
    assert b"Learn-Type: bulk" in learn_request("ham", "a@b.example", b"x", bulk=True)
    assert learn_request("ham", "a@b.example", b"x").startswith(b"POST /learnham ")


@pytest.mark.parametrize("user", ["", "a@b.example\r\nX-Evil: 1", "a\n@b"])
def test_a_user_that_would_break_the_header_is_refused(user: str) -> None:
    with pytest.raises(ValueError, match="cannot send"):
        learn_request("spam", user, b"x")


def test_answers_learned_already_refused_unavailable() -> None:
    assert read_answer(b"HTTP/1.0 200 OK\r\n\r\n{}").outcome is Outcome.LEARNED
    assert read_answer(b"HTTP/1.1 208 Already\r\n\r\n{}").outcome is Outcome.ALREADY
    refused = read_answer(b'HTTP/1.0 400 Bad\r\n\r\n{"error":"too few tokens"}')
    assert (refused.outcome, refused.reason) == (Outcome.REFUSED, "400 too few tokens")
    with pytest.raises(ControllerUnavailable):
        read_answer(b'HTTP/1.0 503 Busy\r\n\r\n{"error":"no backend"}')
    with pytest.raises(ControllerUnavailable):
        read_answer(b"")


def test_spool_files_name_class_and_user() -> None:
    entry = parse_entry(Path("x"), b"ham Alice@Example.com\nSubject: hi\r\n\r\nbody")
    assert (entry.kind, entry.user, entry.message) == (
        "ham",
        "alice@example.com",
        b"Subject: hi\r\n\r\nbody",
    )


@pytest.mark.parametrize(
    "data", [b"", b"spam\nmsg", b"eggs a@b.example\nmsg", b"spam nobody\nmsg", b"spam a@b"]
)
def test_a_bad_spool_file_is_named(data: bytes) -> None:
    with pytest.raises(BadSpoolFile, match="first line"):
        parse_entry(Path("learn.1"), data)


@pytest.mark.parametrize(("raw", "parsed"), [("3:30", "03:30"), (" 23:59 ", "23:59"), ("", None)])
def test_daily_time(raw: str, parsed: str | None) -> None:
    assert parse_daily_time(raw) == parsed


@pytest.mark.parametrize("raw", ["24:00", "3", "03:60", "noon"])
def test_bad_daily_time(raw: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_daily_time(raw)


def test_the_next_run_is_today_or_tomorrow() -> None:
    now = time.mktime((2026, 11, 26, 2, 0, 0, 0, 0, -1))
    assert seconds_until("03:30", now) == 90 * 60
    assert seconds_until("01:00", now) == 23 * 3600
    assert seconds_until("02:00", now) == 24 * 3600  # now has passed: tomorrow
