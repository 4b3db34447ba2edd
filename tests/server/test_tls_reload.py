"""A certificate replaced on disk (MAILSTACK_TLS_CERT_FILE, as a renewed Kubernetes Secret)
reaches Postfix, Dovecot and the worker's HTTPS without a restart, and an IMAP session opened
before keeps working."""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from mailserver import PASSWORD, MailServer, Ports, running_server, server_env
from tests.helpers import private_root, wait_for
from web_harness import peer_certificate, store_with_user

pytestmark = pytest.mark.daemons

HOSTNAME = "mx.example.com"
USER = "alice@example.com"


@dataclass
class World:
    server: MailServer
    ports: Ports
    ca: trustme.CA
    cert: Path
    key: Path

    def trust(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        context.check_hostname = False  # clients connect to 127.0.0.1; the chain is checked
        return context

    def serial(self, port: int) -> int:
        return peer_certificate(port, self.trust()).serial_number

    def replace(self) -> int:
        """A new pair written over the old files, one after the other, as tools do."""
        issued = self.ca.issue_cert(HOSTNAME)
        for path, pem in (
            (self.cert, issued.cert_chain_pems[0]),
            (self.key, issued.private_key_pem),
        ):
            pem.write_to_path(str(path.with_suffix(".new")))
            path.with_suffix(".new").replace(path)
        return x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()).serial_number


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with private_root() as root:
        store_with_user(root, "example.com", USER, PASSWORD)
        ca = trustme.CA()
        cert, key = root / "tls.crt", root / "tls.key"
        issued = ca.issue_cert(HOSTNAME)
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        ports = Ports()
        env = server_env(
            root,
            ports,
            POSTFIX_myhostname=HOSTNAME,
            MAILSTACK_TLS_CERT_FILE=str(cert),
            MAILSTACK_TLS_KEY_FILE=str(key),
        )
        with running_server(root, env) as server:
            yield World(server, ports, ca, cert, key)


def test_replaced_certificate_reaches_every_listener(world: World) -> None:
    listeners = (world.ports.imaps, world.ports.submissions, world.ports.https)
    before = {world.serial(port) for port in listeners}
    assert len(before) == 1
    imap = imaplib.IMAP4_SSL("127.0.0.1", world.ports.imaps, ssl_context=world.trust())
    try:
        imap.login(USER, PASSWORD)
        serial = world.replace()

        def everywhere() -> bool:
            return all(world.serial(port) == serial for port in listeners)

        # the supervisor looks every 5 s and acts when two looks agree
        wait_for(everywhere, 30, f"serial {serial:x} on every listener\n{world.server.log}")
        assert "the TLS certificate changed: reloading Postfix and Dovecot" in world.server.log
        assert imap.select("INBOX")[0] == "OK"  # the session from before the reload
    finally:
        imap.logout()
