"""Brute force against IMAP and submission: Dovecot's auth penalty (anvil) counts failed
logins against the address the client really connects from, not against Postfix's or a
proxy's, so one attacker slows down and nobody else does.

The clients bind to other loopback addresses (127.0.0.2 for IMAP, 127.0.0.3 for
submission); `doveadm penalty` then lists exactly those addresses.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import subprocess

import pytest

from tests.security.harness import server_profile
from tests.server.mailserver import MailServer, Ports

pytestmark = pytest.mark.daemons

WRONG = "not the password"


class IMAPFrom(imaplib.IMAP4):
    """IMAP from a chosen local address (imaplib has no source address option)."""

    def __init__(self, source: str, port: int) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


def penalties(server: MailServer) -> dict[str, int]:
    """`doveadm penalty`: client address -> penalty."""
    conf = server.root / "etc/mailstack/dovecot.conf"
    result = subprocess.run(
        ["doveadm", "-c", str(conf), "penalty"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rows = [line.split() for line in result.stdout.splitlines()[1:] if line.strip()]
    return {row[0]: int(row[1]) for row in rows}


def test_failed_logins_count_against_the_real_client_address() -> None:
    ports = Ports()
    with server_profile(ports) as server:
        for _ in range(2):
            client = IMAPFrom("127.0.0.2", ports.imap)
            try:
                client.starttls(server.tls_context())
                with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                    client.login("alice@example.com", WRONG)
            finally:
                client.shutdown()
        for _ in range(2):
            with smtplib.SMTP(
                "127.0.0.1", ports.submission, source_address=("127.0.0.3", 0), timeout=30
            ) as smtp:
                smtp.starttls(context=server.tls_context())
                with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                    smtp.login("alice@example.com", WRONG)
                assert refused.value.smtp_code == 535

        found = penalties(server)
        assert found.get("127.0.0.2", 0) > 0, found  # IMAP's client
        assert found.get("127.0.0.3", 0) > 0, found  # submission's client, passed by Postfix
        assert "127.0.0.1" not in found, found  # not Postfix's own address
