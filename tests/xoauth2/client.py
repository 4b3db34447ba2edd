"""A real SMTP client for the hop (aiosmtplib), reporting the reply to every command.

Postfix is what will talk to the hop in production; until the end-to-end tests drive a
real Postfix, this client sends the same command sequence and keeps each reply, so tests
can assert what Postfix would see for MAIL, for each RCPT and for DATA.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiosmtplib

from mailstack.xoauth2 import XOAuth2Hop

HopFactory = Callable[..., Awaitable[XOAuth2Hop]]

MESSAGE = (
    b"From: app@example.org\r\n"
    b"To: someone@example.net\r\n"
    b"Subject: xoauth2 hop test\r\n"
    b"Message-ID: <hop-test@example.org>\r\n"
    b"\r\n"
    b"Hello through the hop.\r\n"
    b".leading dot survives\r\n"
)


@dataclass
class Outcome:
    mail: int = 0
    rcpt: dict[str, int] = field(default_factory=dict)
    data: int | None = None
    texts: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return self.data == 250


async def deliver(
    port: int,
    recipients: list[str] | None = None,
    sender: str = "app@example.org",
    message: bytes = MESSAGE,
) -> Outcome:
    """One transaction through the hop; stops early the way Postfix would."""
    outcome = Outcome()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=20)
    await client.connect(local_hostname="postfix.test")
    try:
        await client.ehlo()
        reply = await client.execute_command(f"MAIL FROM:<{sender}>".encode())
        outcome.mail = reply.code
        outcome.texts.append(reply.message)
        if reply.code != 250:
            return outcome
        for rcpt in recipients or ["someone@example.net"]:
            reply = await client.execute_command(f"RCPT TO:<{rcpt}>".encode())
            outcome.rcpt[rcpt] = reply.code
            outcome.texts.append(reply.message)
        if not any(code == 250 for code in outcome.rcpt.values()):
            return outcome
        try:
            reply = await client.data(message)
        except aiosmtplib.SMTPDataError as exc:
            outcome.data = exc.code
            outcome.texts.append(exc.message)
        else:
            outcome.data = reply.code
            outcome.texts.append(reply.message)
        return outcome
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()
