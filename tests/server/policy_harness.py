"""A private Postfix set up like mailstack's port 25 for the greylisting tests, and an SMTP
client that connects from 127.0.0.2, outside `mynetworks`.

Postfix: `mynetworks = 127.0.0.1/32`; recipient restrictions `permit_mynetworks,
reject_unauth_destination, check_policy_service { unix:<socket>, default_action=DUNNO }`;
mail for the one relay domain goes to a sink. Imported by the policy tests (pytest puts
this folder on sys.path); the Postfix itself comes from milter_harness.
"""

from __future__ import annotations

import contextlib
import smtplib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from milter_harness import PrivatePostfix, running_postfix

REMOTE_CLIENT = "127.0.0.2"  # not in mynetworks: greylisted
LOCAL_CLIENT = "127.0.0.1"  # in mynetworks: permitted before the policy is asked
HOSTED = "hosted.test"


def greylisting_options(policy_socket: Path, sink_port: int) -> dict[str, str]:
    restriction = f"check_policy_service {{ unix:{policy_socket}, default_action=DUNNO }}"
    return {
        "myhostname": "mx.mailstack.test",
        "mynetworks": f"{LOCAL_CLIENT}/32",
        "relay_domains": HOSTED,
        "relayhost": f"[127.0.0.1]:{sink_port}",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "smtpd_recipient_restrictions": (
            f"permit_mynetworks, reject_unauth_destination, {restriction}"
        ),
        # 127.0.0.2 has no name here; a DNS lookup would only slow every session down
        "smtpd_peername_lookup": "no",
    }


@contextlib.contextmanager
def greylisting_postfix(
    policy_socket: Path, sink_port: int, name: str, extra: Mapping[str, str] | None = None
) -> Iterator[PrivatePostfix]:
    options = {**greylisting_options(policy_socket, sink_port), **(extra or {})}
    with running_postfix(options, {"syslog_name": f"postfix/{name}"}) as postfix:
        yield postfix


def message(sender: str, recipient: str, subject: str) -> bytes:
    lines = [
        f"From: {sender or 'MAILER-DAEMON@remote.test'}",
        f"To: {recipient}",
        f"Subject: {subject}",
        f"Message-ID: <{time.monotonic_ns()}@remote.test>",
        "",
        "Hello.",
    ]
    return "\r\n".join(lines).encode() + b"\r\n"


def attempt(
    postfix: PrivatePostfix,
    sender: str,
    recipient: str,
    *,
    client: str = REMOTE_CLIENT,
    subject: str | None = None,
) -> tuple[int, str]:
    """One SMTP session: MAIL, RCPT and (when the recipient is taken and a subject is
    given) DATA. The last reply: (code, text)."""
    with smtplib.SMTP(
        "127.0.0.1",
        postfix.port,
        local_hostname="mx.remote.test",
        timeout=60,
        source_address=(client, 0),
    ) as smtp:
        smtp.ehlo()
        code, text = smtp.mail(sender)
        if code != 250:
            return code, text.decode()
        code, text = smtp.rcpt(recipient)
        if code == 250 and subject is not None:
            code, text = smtp.data(message(sender, recipient, subject))
        return code, text.decode()
