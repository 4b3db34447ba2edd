"""What the relay refuses at SMTP time, and what it does to headers and addresses."""

from __future__ import annotations

import smtplib
import socket
from pathlib import Path

import pytest

from tests.helpers import (
    Sink,
    base_env,
    free_port,
    message,
    running_relay,
    smtp_sink,
    wait_for,
)


def test_refusals_at_smtp_time(root: Path, port: int, sink: Sink) -> None:
    """Foreign sender domains, clients outside mynetworks and oversize mail get 5xx replies."""
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        RELAYHOST=f"[127.0.0.1]:{sink.port}",
        POSTFIX_mynetworks="127.0.0.1/32",
        POSTFIX_message_size_limit="20000",
    )
    with running_relay(root, env):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("app.test")
            client.mail("app@evil.example")
            code, text = client.rcpt("someone@example.net")
            assert code == 554, text
            assert b"Relay access denied" in text or b"Access denied" in text

        with smtplib.SMTP(
            "127.0.0.1", port, timeout=60, source_address=("127.0.0.2", 0)
        ) as outsider:
            outsider.ehlo("outsider.test")
            outsider.mail("app@example.com")
            code, text = outsider.rcpt("someone@example.net")
            assert code == 554, text
            assert b"Client host rejected" in text

        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            big = message(
                "app@example.com", "x@example.net", extra="X-Pad: " + "a" * 30000 + "\r\n"
            )
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail("app@example.com", ["x@example.net"], big)
            assert refused.value.smtp_code == 552

        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail(
                "app@example.com", ["x@example.net"], message("app@example.com", "x@example.net")
            )
        sink.wait_messages(1)
    assert [e.mail_from for e, _ in sink.messages] == ["app@example.com"]


def test_header_checks_and_masquerading(root: Path, port: int, sink: Sink) -> None:
    """SMTP_HEADER_CHECKS=1 strips revealing headers; MASQUERADED_DOMAINS hides host names."""
    env = base_env(
        root,
        port,
        ALLOWED_SENDER_DOMAINS="example.com",
        RELAYHOST=f"[127.0.0.1]:{sink.port}",
        SMTP_HEADER_CHECKS="1",
        MASQUERADED_DOMAINS="example.com",
    )
    revealing = (
        "Received: from build-42.internal (10.1.2.3)\r\n"
        "X-Originating-IP: 10.1.2.3\r\nX-Mailer: InternalApp 1.0\r\n"
        "User-Agent: curl/8.0\r\nX-Keep: yes\r\n"
    )
    with running_relay(root, env):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail(
                "x@host.example.com",
                ["someone@example.net"],
                message("x@host.example.com", "someone@example.net", extra=revealing),
            )
        ((envelope, msg),) = sink.wait_messages(1)
    for header in ("Received", "X-Originating-IP", "X-Mailer", "User-Agent"):
        assert msg[header] is None, f"{header} was not stripped"
    assert msg["X-Keep"] == "yes"
    assert envelope.mail_from == "x@example.com"
    assert msg["From"] == "x@example.com"


def test_relay_host_password_auth(root: Path, port: int) -> None:
    """The right password delivers; a wrong one leaves the message deferred, not bounced.

    The sink offers no STARTTLS, so the password may go in clear only because it is allowed
    by name (tests/relay/test_relay_auth_tls.py covers the default, TLS only)."""
    with smtp_sink(credentials=("relayuser", "s3cret-pass")) as sink:
        env = base_env(
            root,
            port,
            ALLOWED_SENDER_DOMAINS="example.com",
            RELAYHOST=f"[127.0.0.1]:{sink.port}",
            RELAYHOST_USERNAME="relayuser",
            RELAYHOST_PASSWORD="s3cret-pass",
            POSTFIX_smtp_sasl_security_options="noanonymous",
        )
        with running_relay(root, env) as relay:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail(
                    "app@example.com",
                    ["a@example.net"],
                    message("app@example.com", "a@example.net"),
                )
            sink.wait_messages(1)
            assert ("relayuser", "s3cret-pass") in sink.auth_seen
            assert "s3cret-pass" not in relay.log

        env["RELAYHOST_PASSWORD"] = "wrong-pass"
        with running_relay(root, env) as relay:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail(
                    "app@example.com",
                    ["b@example.net"],
                    message("app@example.com", "b@example.net"),
                )
            wait_for(lambda: "status=deferred" in relay.log, 30, "a deferral in the log")
            # smtp logs the deferral before qmgr moves the file into the deferred queue.
            wait_for(lambda: bool(relay.queue_ids("deferred")), 10, "a deferred queue file")
            assert "status=bounced" not in relay.log
            assert "wrong-pass" not in relay.log
        assert len(sink.messages) == 1


def test_optional_smtp_listener(root: Path, port: int) -> None:
    """MAILSTACK_LISTEN_SMTP adds a second listener (boky/postfix also listens on 25)."""
    smtp_port = free_port()
    env = base_env(
        root,
        port,
        ALLOW_EMPTY_SENDER_DOMAINS="true",
        MAILSTACK_LISTEN_SMTP=f"127.0.0.1:{smtp_port}",
    )
    with (
        running_relay(root, env),
        socket.create_connection(("127.0.0.1", smtp_port), timeout=10) as conn,
    ):
        assert conn.recv(100).startswith(b"220")
