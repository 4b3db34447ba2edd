"""What the log pipeline hides: SASL initial responses and registered secrets, and only them."""

from __future__ import annotations

import pytest

from mailstack.log import redact


@pytest.mark.parametrize(
    ("line", "hidden"),
    [
        ("smtp: < AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AGFsaWNlAHNlY3JldA=="),
        ("> auth login YWxpY2U=", "YWxpY2U="),
        ("C: a1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==", "AGFsaWNlAHNlY3JldA=="),
        ("AUTH XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciB0b2tlbgEB", "dXNlcj1hbGljZQ"),
        ("AUTH SCRAM-SHA-256 biwsbj1hbGljZSxyPW5vbmNl", "biwsbj1hbGljZSxyPW5vbmNl"),
    ],
)
def test_sasl_initial_responses_are_hidden(line: str, hidden: str) -> None:
    scrubbed = redact(line)
    assert hidden not in scrubbed
    assert "********" in scrubbed


@pytest.mark.parametrize(
    "line",
    [
        "dovecot: imap-login: Disconnected: auth failed, 1 attempts in 2 secs (auth failed)",
        "postfix/smtpd[12]: warning: unknown[10.0.0.1]: SASL LOGIN authentication failed: x",
        "auth process is ready",
    ],
)
def test_lines_without_a_secret_stay_whole(line: str) -> None:
    assert redact(line) == line
