"""The delivery log's two halves: the supervisor's journal fed with real Postfix and Dovecot
lines (as a server logged them), and the worker's per-user reading of the files it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailstack.deliverylog import CURRENT, PREVIOUS
from mailstack.deliverylog.journal import DeliveryJournal
from mailstack.deliverylog.reader import read_deliveries
from mailstack.runtime.logparse import parse_dovecot_line, parse_postfix_line

SOCKET = "mx.example.com[/srv/run/mailstack/dovecot/lmtp-postfix]"
POSTFIX = f"""\
postfix/smtpd[9405]: 7FB32EA27B4: client=localhost[127.0.0.1]
postfix/cleanup[9408]: 7FB32EA27B4: message-id=<1@test.example>
postfix/qmgr[9402]: 7FB32EA27B4: from=<Friend@Remote.test>, size=332, nrcpt=1 (queue active)
postfix/lmtp[9409]: 7FB32EA27B4: to=<alice@example.com>, relay={SOCKET}, delay=0.09, \
delays=0.01/0.02/0/0.06, dsn=2.0.0, status=sent (250 2.0.0 <alice@example.com> \
oM6sII5wCGu3JAAAg+zDdQ Saved)
postfix/qmgr[9402]: 7FB32EA27B4: removed
postfix/smtpd[9405]: NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 550 5.1.1 \
<nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table; \
from=<x@remote.test> to=<nobody@example.com> proto=ESMTP helo=<mail.remote.test>
postfix/smtpd[9405]: NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 450 4.7.1 \
<alice@example.com>: Recipient address rejected: greylisted, try again later; \
from=<spam@remote.test> to=<alice@example.com> proto=ESMTP helo=<mail.remote.test>
postfix/submission/smtpd[9411]: A4DD6EA2556: client=localhost[127.0.0.1], \
sasl_method=PLAIN, sasl_username=Bob@example.com
postfix/qmgr[9402]: A4DD6EA2556: from=<bob@example.com>, size=524, nrcpt=2 (queue active)
postfix/lmtp[9409]: A4DD6EA2556: to=<alice@example.com>, relay={SOCKET}, delay=0.04, \
delays=0.01/0/0/0.02, dsn=2.0.0, status=sent (250 2.0.0 <alice@example.com> \
qD/gKI5wCGu3JAAAg+zDdQ Saved)
postfix/smtp[9418]: A4DD6EA2556: to=<out@remote.test>, relay=none, delay=0.06, \
delays=0.01/0.04/0/0, dsn=4.4.1, status=deferred (connect to remote.test[192.0.2.1]:25: \
Connection refused)
"""
DOVECOT = """\
lmtp(alice@example.com)<9399><oM6sII5wCGu3JAAAg+zDdQ>: msgid=<1@test.example>: saved mail \
to INBOX
lmtp(alice@example.com)<9399><qD/gKI5wCGu3JAAAg+zDdQ>: sieve: msgid=<2@test.example>: \
fileinto action: stored mail into mailbox 'Boss'
lmtp(9399): Disconnect from local: Logged out (state=READY)
"""


def journal_of(folder: Path, rotate_bytes: int = 1 << 20) -> DeliveryJournal:
    journal = DeliveryJournal(folder, rotate_bytes=rotate_bytes, clock=lambda: 1_800_000_000.0)
    for line in DOVECOT.splitlines():  # Dovecot's lines may come first: the reader joins
        journal.observe(parse_dovecot_line(line))
    for line in POSTFIX.splitlines():
        journal.observe(parse_postfix_line(line, with_fields=False))
    return journal


def test_a_user_sees_mail_to_them_with_its_folder_and_refusals(tmp_path: Path) -> None:
    journal_of(tmp_path).close()
    found = read_deliveries(tmp_path, "alice@example.com")
    assert [(d.direction, d.sender, d.status, d.mailbox) for d in found] == [
        ("in", "bob@example.com", "sent", "Boss"),
        ("in", "spam@remote.test", "rejected", None),
        ("in", "friend@remote.test", "sent", "INBOX"),
    ]
    assert found[1].reply.startswith("450 4.7.1 <alice@example.com>: Recipient address")
    assert found[2].queue_id == "7FB32EA27B4"
    assert found[2].relay == SOCKET
    assert found[2].reply == "250 2.0.0 <alice@example.com> oM6sII5wCGu3JAAAg+zDdQ Saved"


def test_the_sender_sees_what_they_sent_but_not_where_others_filed_it(tmp_path: Path) -> None:
    journal_of(tmp_path).close()
    found = read_deliveries(tmp_path, "bob@example.com")
    assert [(d.direction, d.recipient, d.status, d.mailbox) for d in found] == [
        ("out", "out@remote.test", "deferred", None),
        ("out", "alice@example.com", "sent", None),
    ]
    assert found[0].reply.endswith("Connection refused")
    assert found[0].relay is None


def test_others_see_none_of_it(tmp_path: Path) -> None:
    journal_of(tmp_path).close()
    assert read_deliveries(tmp_path, "carol@example.com") == []
    assert read_deliveries(tmp_path, "example.com") == []  # a part of an address is no match
    # unknown recipients and relay attempts are not kept at all
    assert "nobody@example.com" not in (tmp_path / CURRENT).read_text()


def test_files_rotate_at_their_size_and_the_newest_are_kept(tmp_path: Path) -> None:
    journal = journal_of(tmp_path, rotate_bytes=2000)
    for _ in range(20):
        for line in POSTFIX.splitlines():
            journal.observe(parse_postfix_line(line))
    journal.close()
    assert (tmp_path / CURRENT).stat().st_size <= 2000
    assert (tmp_path / PREVIOUS).stat().st_size <= 2000
    assert not list(tmp_path.glob("*.2*"))
    assert 0 < len(read_deliveries(tmp_path, "alice@example.com", limit=5)) <= 5


def test_a_line_cut_short_is_skipped(tmp_path: Path) -> None:
    journal_of(tmp_path).close()
    with (tmp_path / CURRENT).open("a") as handle:
        handle.write('{"kind":"delivery","to":"alice@example.com","status"')
    assert len(read_deliveries(tmp_path, "alice@example.com")) == 3


def test_root_does_not_follow_a_link_planted_as_the_file(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / CURRENT).symlink_to(target)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        DeliveryJournal(tmp_path)
    assert target.read_text() == ""


def test_records_are_json_lines(tmp_path: Path) -> None:
    journal_of(tmp_path).close()
    for line in (tmp_path / CURRENT).read_text().splitlines():
        assert json.loads(line)["kind"] in ("delivery", "mailbox")
