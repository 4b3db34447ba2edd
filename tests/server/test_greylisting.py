"""Greylisting on the server profile's MX, end to end: Postfix asks the worker."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator

import pytest
from mailserver import (
    PASSWORD,
    MailServer,
    Ports,
    add_user,
    running_server,
    server_env,
    wait_for_subject,
)
from tests.helpers import private_root

DELAY = 2


@pytest.fixture(scope="module")
def mx() -> Iterator[tuple[MailServer, Ports]]:
    """A server whose mynetworks is 127.0.0.1 only: clients on 127.0.0.2 are outsiders."""
    with private_root() as root:
        add_user(root, "alice@example.com")
        ports = Ports()
        env = server_env(
            root,
            ports,
            POSTFIX_mynetworks="127.0.0.1/32",
            MAILSTACK_GREYLIST_DELAY=str(DELAY),
            MAILSTACK_GREYLIST_ALLOW="127.0.0.3/32",
        )
        with running_server(root, env) as server:
            yield server, ports


def rcpt(port: int, source: str, sender: str, recipient: str) -> tuple[int, bytes]:
    with smtplib.SMTP(
        "127.0.0.1", port, local_hostname="mx.remote.test", timeout=30, source_address=(source, 0)
    ) as client:
        client.ehlo()
        client.mail(sender)
        return client.rcpt(recipient)


def test_unknown_outside_sender_is_greylisted_then_accepted(mx: tuple[MailServer, Ports]) -> None:
    """First attempt 450 4.7.1; a retry after the delay is accepted and delivered."""
    server, ports = mx
    code, reply = rcpt(ports.smtp, "127.0.0.2", "news@remote.test", "alice@example.com")
    assert code == 450, reply
    assert reply.startswith(b"4.7.1"), reply
    time.sleep(DELAY + 0.5)  # the sender's retry, after the greylisting delay
    with smtplib.SMTP(
        "127.0.0.1", ports.smtp, local_hostname="mx.remote.test", timeout=30,
        source_address=("127.0.0.2", 0),
    ) as client:  # fmt: skip
        body = b"Subject: greylisted\r\nFrom: news@remote.test\r\n\r\nhello\r\n"
        assert client.sendmail("news@remote.test", ["alice@example.com"], body) == {}
    wait_for_subject(server, ports.imap, "alice@example.com", "greylisted")


def test_allowed_network_and_mynetworks_pass_at_once(mx: tuple[MailServer, Ports]) -> None:
    """MAILSTACK_GREYLIST_ALLOW and mynetworks are never greylisted."""
    _, ports = mx
    assert rcpt(ports.smtp, "127.0.0.3", "a@remote.test", "alice@example.com")[0] == 250
    assert rcpt(ports.smtp, "127.0.0.1", "b@remote.test", "alice@example.com")[0] == 250


def test_submission_is_never_greylisted(mx: tuple[MailServer, Ports]) -> None:
    """A user who logged in on 587 from outside mynetworks is not greylisted."""
    server, ports = mx
    with smtplib.SMTP(
        "127.0.0.1", ports.submission, timeout=30, source_address=("127.0.0.4", 0)
    ) as client:
        client.starttls(context=server.tls_context())
        client.login("alice@example.com", PASSWORD)
        client.mail("alice@example.com")
        assert client.rcpt("alice@example.com")[0] == 250


def test_unknown_recipient_is_refused_before_greylisting(mx: tuple[MailServer, Ports]) -> None:
    """A recipient that does not exist gets 550 at once, not a 450 to come back for."""
    _, ports = mx
    code, _ = rcpt(ports.smtp, "127.0.0.2", "x@remote.test", "nobody@example.com")
    assert code == 550


def test_bare_newlines_are_refused_from_outside(mx: tuple[MailServer, Ports]) -> None:
    """SMTP smuggling: a message with bare LF line endings from outside mynetworks (here an
    address greylisting lets through) is refused or kept whole: the `.` and the MAIL FROM
    hidden behind bare LFs never start a second message."""
    server, ports = mx
    with smtplib.SMTP(
        "127.0.0.1", ports.smtp, local_hostname="mx.remote.test", timeout=30,
        source_address=("127.0.0.3", 0),
    ) as client:  # fmt: skip
        client.ehlo()
        client.mail("a@remote.test")
        assert client.rcpt("alice@example.com")[0] == 250
        client.putcmd("DATA")
        assert client.getreply()[0] == 354
        client.send(
            b"Subject: first\r\n\r\nline\n.\nMAIL FROM:<smuggler@remote.test>\n"
            b"RCPT TO:<alice@example.com>\nDATA\nSubject: smuggled\n\nsecond\n.\n"
            b"\r\n.\r\n"
        )
        code, _ = client.getreply()
    assert code >= 500 or code == 250
    time.sleep(1)  # what Postfix logs for the session, after it
    assert "smuggler@remote.test" not in server.log
