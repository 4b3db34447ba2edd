"""The whole server profile with ACME against Pebble: the worker obtains the certificate over
HTTP-01 on the server's HTTP listener; Postfix, Dovecot and the worker's HTTPS present it
(checked by TLS clients that trust only Pebble's root); a forced renewal reaches every
listener while an IMAP and an SMTP session opened before stay usable."""

from __future__ import annotations

import contextlib
import imaplib
import json
import re
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from mailserver import PASSWORD, MailServer, Ports, running_server, server_env
from tests.helpers import MAILSTACK, private_root, wait_for
from web_harness import Pebble, pebble, peer_certificate, store_with_user

from mailstack.acme.files import AcmeFiles

pytestmark = pytest.mark.daemons

HOSTNAME = "mx.example.com"
USER = "alice@example.com"


@dataclass
class World:
    server: MailServer
    ports: Ports
    root: str  # Pebble's issuing root (PEM): the only one the clients trust
    pebble: Pebble

    @property
    def files(self) -> AcmeFiles:
        return AcmeFiles(self.server.root / "var/lib/mailstack/acme")

    def chain_only(self) -> ssl.SSLContext:
        """Pebble's root, the name unchecked: for clients that connect to 127.0.0.1."""
        context = ssl.create_default_context(cadata=self.root)
        context.check_hostname = False
        return context

    def serial(self, port: int) -> int:
        """The serial the listener on `port` presents, verified for HOSTNAME by Pebble's root."""
        trust = ssl.create_default_context(cadata=self.root)
        return peer_certificate(port, trust, HOSTNAME).serial_number

    def starttls_serial(self, port: int) -> int:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.starttls(context=self.chain_only())
            der = smtp.sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def issued_serials(self) -> list[int]:
        return [
            int(s, 16)
            for s in re.findall(r"new certificate for .*: serial ([0-9a-f]+)", self.server.log)
        ]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with private_root() as root:
        store_with_user(root, "example.com", USER, PASSWORD)
        ports = Ports()
        with pebble(root, ports.http) as server:
            root_pem = server.issuing_root()
            env = server_env(
                root,
                ports,
                POSTFIX_myhostname=HOSTNAME,
                MAILSTACK_TLS_NAMES="mta-sts.example.com",
                MAILSTACK_ACME_EMAIL="postmaster@example.com",
                MAILSTACK_ACME_DIRECTORY=server.directory,
                MAILSTACK_ACME_CA_FILE=str(server.ca_file),
            )
            with running_server(root, env) as mail:
                yield World(mail, ports, root_pem, server)


def mailstack(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an admin runs it on the server (same environment)."""
    argv = [*MAILSTACK, *args]
    return subprocess.run(
        argv, env=world.server.env, capture_output=True, text=True, timeout=60, check=False
    )


def presents(world: World, serial: int) -> bool:
    try:
        return (
            world.serial(world.ports.imaps) == serial
            and world.serial(world.ports.submissions) == serial
            and world.serial(world.ports.https) == serial
            and world.starttls_serial(world.ports.submission) == serial
        )
    except (ssl.SSLError, OSError, smtplib.SMTPException):
        return False


def test_every_listener_presents_the_acme_certificate(world: World) -> None:
    wait_for(lambda: bool(world.issued_serials()), 60, f"a certificate\n{world.pebble.log()}")
    serial = world.issued_serials()[0]
    # at most one supervisor look (5 s) and one more to see the pair settled
    wait_for(
        lambda: presents(world, serial), 30, f"serial {serial:x} everywhere\n{world.server.log}"
    )


def test_forced_renewal_keeps_open_sessions(world: World) -> None:
    wait_for(lambda: bool(world.issued_serials()), 60, "a first certificate")
    first = world.issued_serials()[-1]
    wait_for(lambda: presents(world, first), 30, "the first certificate everywhere")
    imap = imaplib.IMAP4_SSL("127.0.0.1", world.ports.imaps, ssl_context=world.chain_only())
    smtp = smtplib.SMTP("127.0.0.1", world.ports.submission, timeout=30)
    try:
        imap.login(USER, PASSWORD)
        smtp.starttls(context=world.chain_only())
        smtp.login(USER, PASSWORD)
        reloads = world.server.log.count("reloading Postfix and Dovecot")
        asked = mailstack(world, "tls", "renew", "--force")
        assert asked.returncode == 0, asked.stderr
        wait_for(
            lambda: len(world.issued_serials()) >= 2 and world.issued_serials()[-1] != first,
            60,
            "a renewed certificate",
        )
        renewed = world.issued_serials()[-1]
        wait_for(
            lambda: presents(world, renewed),
            30,
            f"serial {renewed:x} everywhere\n{world.server.log}",
        )
        assert world.server.log.count("reloading Postfix and Dovecot") > reloads
        # the sessions opened before the reload still work
        assert imap.select("INBOX")[0] == "OK"
        assert imap.noop()[0] == "OK"
        assert smtp.noop()[0] == 250
        smtp.sendmail(
            USER,
            [USER],
            f"From: {USER}\r\nTo: {USER}\r\nSubject: after reload\r\n\r\nhi\r\n".encode(),
        )
    finally:
        for close in (imap.logout, smtp.quit):
            with contextlib.suppress(OSError, imaplib.IMAP4.error, smtplib.SMTPException):
                close()


def test_tls_show_lists_the_certificate_in_use(world: World) -> None:
    wait_for(lambda: bool(world.issued_serials()), 60, "a certificate")
    wait_for(lambda: presents(world, world.issued_serials()[-1]), 30, "it served")
    shown = mailstack(world, "tls", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    [record] = json.loads(shown.stdout)
    assert record["serial"] == f"{world.serial(world.ports.imaps):x}"
    assert record["issuer"].startswith("Pebble Intermediate CA")
    assert set(record["names"]) == {HOSTNAME, "mta-sts.example.com"}
    assert record["source"].startswith("ACME (https://127.0.0.1:")
    table = mailstack(world, "tls", "show")
    assert record["serial"] in table.stdout
