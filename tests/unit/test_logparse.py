"""Daemon log lines as the log stream indexes them: service, pid, level, message, fields."""

from __future__ import annotations

import pytest

from mailstack.runtime.logparse import (
    LogRecord,
    mail_event,
    parse_postfix_line,
    parse_syslog_message,
)

LEVELS = {"debug", "info", "warning", "error", "critical"}

# -- Postfix (postlogd lines) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "Mar  7 09:15:02 relay postfix/submission/smtpd[4242]: connect from app[10.0.0.5]",
        "Mar 17 09:15:02.123456 relay postfix/submission/smtpd[4242]: connect from app[10.0.0.5]",
        "postfix/submission/smtpd[4242]: connect from app[10.0.0.5]",
    ],
    ids=["timestamp", "microseconds", "bare"],
)
def test_postfix_line_shapes(line: str) -> None:
    """With or without timestamp and host, a postlogd line yields service, pid and message."""
    assert parse_postfix_line(line) == LogRecord(
        service="postfix/submission/smtpd",
        message="connect from app[10.0.0.5]",
        pid=4242,
        level="info",
        fields={},
    )


@pytest.mark.parametrize(
    ("message", "level"),
    [
        ("warning: hostname app does not resolve to address 10.0.0.5", "warning"),
        ("error: open database /etc/postfix/x.db: No such file or directory", "error"),
        ("fatal: bind 0.0.0.0 port 25: Address already in use", "critical"),
        ("panic: myfree: corrupt or unallocated memory block", "critical"),
        ("disconnect from app[10.0.0.5] ehlo=1 mail=1 rcpt=1 data=1 quit=1", "info"),
        ("NOQUEUE: warning: something odd", "info"),
    ],
)
def test_postfix_level_from_the_message_prefix(message: str, level: str) -> None:
    """Postfix's `warning:`/`error:`/`fatal:`/`panic:` prefixes set the level; else info."""
    record = parse_postfix_line(f"Mar  7 09:15:02 relay postfix/smtpd[7]: {message}")
    assert (record.level, record.message) == (level, message)


def test_postfix_delivery_fields() -> None:
    """A delivery line gives queue_id, to, relay, delay, dsn and the bare status word."""
    line = (
        "Mar  7 09:15:03 relay postfix/smtp[4300]: 3F2A1B2C3D: to=<bob@example.net>, "
        "relay=mx.example.net[192.0.2.10]:25, delay=0.52, delays=0.1/0.01/0.2/0.21, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9A8B7C)"
    )
    record = parse_postfix_line(line)
    assert (record.service, record.pid) == ("postfix/smtp", 4300)
    assert record.fields == {
        "queue_id": "3F2A1B2C3D",
        "to": "bob@example.net",
        "relay": "mx.example.net[192.0.2.10]:25",
        "delay": "0.52",
        "dsn": "2.0.0",
        "status": "sent",
    }


def test_postfix_qmgr_fields_with_long_queue_id_and_null_sender() -> None:
    """Long queue IDs are recognised, and the null sender `<>` is an empty `from`."""
    line = "postfix/qmgr[12]: 4Zk3Lh1Xnbz9TvQ: from=<>, size=2048, nrcpt=1 (queue active)"
    assert parse_postfix_line(line).fields == {"queue_id": "4Zk3Lh1Xnbz9TvQ", "from": ""}


def test_postfix_bounce_fields_with_orig_to() -> None:
    """orig_to is kept apart from to; the status is `bounced` without its explanation."""
    line = (
        "postfix/lmtp[55]: 0A1B2C3D4E: to=<alice@example.com>, orig_to=<info@example.com>, "
        "relay=local, delay=1, dsn=5.1.1, status=bounced (user unknown, sorry)"
    )
    fields = parse_postfix_line(line).fields
    assert fields["to"] == "alice@example.com"
    assert fields["orig_to"] == "info@example.com"
    assert fields["status"] == "bounced"


def test_postfix_line_without_queue_id_has_no_fields() -> None:
    """A NOQUEUE reject quotes from= and to=, but it is no delivery: no fields."""
    line = (
        "postfix/submission/smtpd[9]: NOQUEUE: reject: RCPT from app[10.0.0.5]: 554 5.7.1 "
        "<x@example.org>: Sender address rejected: Access denied; from=<x@example.org> "
        "to=<y@example.net> proto=ESMTP helo=<app>"
    )
    assert parse_postfix_line(line).fields == {}


# -- OpenDKIM (syslog datagrams) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("datagram", "pid", "message"),
    [
        (
            "<22>Mar  7 09:15:03 opendkim[45]: 3F2A1B2C3D: DKIM-Signature field added "
            "(s=mail, d=example.com)",
            45,
            "3F2A1B2C3D: DKIM-Signature field added (s=mail, d=example.com)",
        ),
        (
            "<22>opendkim[45]: OpenDKIM Filter v2.11.0 starting",
            45,
            "OpenDKIM Filter v2.11.0 starting",
        ),
        ("<22>opendkim: key retrieval failed\n\x00", None, "key retrieval failed"),
    ],
    ids=["timestamp", "bare", "no-pid-trailing-newline-nul"],
)
def test_opendkim_datagram_shapes(datagram: str, pid: int | None, message: str) -> None:
    """A syslog datagram yields service, pid (when given) and the message, trailers dropped."""
    assert parse_syslog_message(datagram) == LogRecord(
        service="opendkim", message=message, pid=pid, level="info", fields={}
    )


@pytest.mark.parametrize(
    ("pri", "level"),
    [
        (16, "critical"),  # mail.emerg
        (18, "critical"),  # mail.crit
        (19, "error"),
        (20, "warning"),
        (21, "info"),  # notice
        (22, "info"),
        (23, "debug"),
    ],
)
def test_opendkim_level_from_syslog_severity(pri: int, level: str) -> None:
    """The level is the syslog severity (the low three bits of PRI)."""
    assert parse_syslog_message(f"<{pri}>opendkim[1]: x").level == level


# -- Dovecot (its own stderr lines) -------------------------------------------------------------

DOVECOT_LINES = [
    "Mar 07 09:15:00 master: Info: Dovecot v2.3.19.1 (9b53102964) starting up for imap, lmtp",
    "Mar 07 09:15:04 imap-login: Info: Login: user=<alice@example.com>, method=PLAIN, "
    "rip=192.0.2.7, lip=192.0.2.1, mpid=4711, TLS, session=<Zx1aBcDeFg>",
    "Mar 07 09:15:05 lmtp(4712): Info: Connect from local",
    "Mar 07 09:15:05 lmtp(alice@example.com)<4712><kP3xQ2>: Info: sieve: "
    "msgid=<1@example.net>: stored mail into mailbox 'INBOX'",
    "Mar 07 09:15:06 imap(alice@example.com)<4713><Zx1aBcDeFg>: Info: Logged out in=120 out=900",
]


@pytest.mark.parametrize("line", DOVECOT_LINES)
def test_dovecot_lines_are_kept_whole(line: str) -> None:
    """Dovecot lines (no `name[pid]`) are kept whole under the caller's service."""
    record = parse_postfix_line(line, default_service="dovecot")
    assert record == LogRecord(service="dovecot", message=line, pid=None, level="info")


# -- odd lines --------------------------------------------------------------------------------

GARBLED = [
    "",
    " ",
    "\x00\x00",
    "\ufffd\ufffd binary \udcff junk",
    "postfix/smtpd[]: empty pid",
    "postfix/smtpd[12a]: letters in pid",
    "[123]: no service",
    "postfix/smtpd[99999999999999999999999]: huge pid",
    "postfix/smtp[1]: 3F2A1B2C3D: to=<unterminated, status=",
    "postfix/smtp[1]: 3F2A1B2C3D: to=, relay=, status=",
    "postfix/smtp[1]: 3F2A1B2C3D:",
    "fatal:",
    "<>",
    "<22>",
    "<999>opendkim[1]: priority out of range",
    "<22>opendkim[]: x",
    "<abc>opendkim[1]: x",
    "Mar  7 09:15:02 ",
    "a" * 100_000,
    "x[" * 20_000 + "1]: deep",
]


@pytest.mark.parametrize("line", GARBLED, ids=range(len(GARBLED)))
def test_odd_lines_never_raise_and_lose_nothing(line: str) -> None:
    """Garbled text never raises; the record keeps (part of) the line and a known level."""
    for parse in (parse_postfix_line, parse_syslog_message):
        record = parse(line)
        assert isinstance(record, LogRecord)
        assert record.level in LEVELS
        assert record.message in line
        assert record.service


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("Mar 07 09:15:05 lmtp(4712): Error: open(/x) failed: Permission denied", "error"),
        ("Mar 07 09:15:05 master: Warning: Time moved backwards", "warning"),
        ("Mar 07 09:15:05 auth: Fatal: no passdb", "critical"),
        ("Mar 07 09:15:05 imap-login: Info: Login: user=<a@example.com>", "info"),
        ("lmtp(a@example.com)<1><x>: Error: quota exceeded", "error"),
        ("\x00 garbage ))(( : : Error", "info"),
    ],
)
def test_dovecot_lines_keep_their_level(line: str, level: str) -> None:
    """Dovecot's Error/Fatal lines are errors in the log stream, not info."""
    from mailstack.runtime.logparse import parse_dovecot_line

    record = parse_dovecot_line(line)
    assert record.service == "dovecot"
    assert record.level == level


def test_worker_lines_keep_their_level() -> None:
    """The worker's `LEVEL logger: text` lines keep the level; other text is info."""
    from mailstack.runtime.logparse import parse_worker_line

    assert parse_worker_line("ERROR mailstack.worker: worker failed: x").level == "error"
    assert parse_worker_line("INFO mailstack.worker: serving lookup").message == (
        "mailstack.worker: serving lookup"
    )
    assert parse_worker_line("Traceback (most recent call last):").level == "info"


# -- the server's spam and greylisting events ---------------------------------------------------

RSPAMD_MX_LINE = (
    "#11260(rspamd_proxy) <ed1cf2>; proxy; rspamd_task_write_log: id: <x@mx.example.com>, "
    "qid: <15451EA20C4>, ip: 203.0.113.25, from: <friend@remote.test>, (default: {verdict}: "
    "[-0.10/15.00] [MIME_GOOD(-0.10){{text/plain;}}]), len: 225, time: 10.9ms, dns req: 2, "
    "digest: <c694>, rcpts: <grace@example.com>, mime_rcpts: <grace@example.com>, "
    "settings_id: mx"
)


@pytest.mark.parametrize(
    ("verdict", "event"),
    [
        ("F (no action)", "spam_clean"),
        ("T (add header)", "spam_junk"),
        ("T (reject)", "spam_rejected"),
        ("T (soft reject)", "spam_deferred"),
    ],
)
def test_rspamd_verdicts_at_the_mx_are_counted(verdict: str, event: str) -> None:
    line = RSPAMD_MX_LINE.format(verdict=verdict)
    assert mail_event(LogRecord("rspamd", line)) == event
    # the per-recipient Bayes check at delivery is no verdict
    delivery = line.replace("settings_id: mx", "settings_id: delivery")
    assert mail_event(LogRecord("rspamd", delivery)) is None


@pytest.mark.parametrize(
    ("message", "event"),
    [
        (
            "mailstack.policy.server: greylist-policy: defer (new): client=a[192.0.2.1] "
            "sender=<a@b.example> recipient=<c@d.example>",
            "greylist_deferred",
        ),
        (
            "mailstack.policy.server: greylist-policy: pass (retried): client=a[192.0.2.1] "
            "sender=<a@b.example> recipient=<c@d.example>",
            "greylist_passed",
        ),
        ("mailstack.spam: learned spam for a@b.example (learned)", "learned_spam"),
        ("mailstack.spam: learned ham for a@b.example (learned)", "learned_ham"),
        ("mailstack.spam: learned ham for a@b.example (already)", None),
        ("mailstack.netserver: dict listening on unix:/x", None),
    ],
)
def test_worker_events_are_counted(message: str, event: str | None) -> None:
    assert mail_event(LogRecord("worker", message)) == event
