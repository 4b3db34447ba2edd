"""ACME against Pebble: the worker answers the real HTTP-01 challenge on its HTTP listener
(Pebble's VA fetches it from a loopback high port), installs the certificate, serves it on
its HTTPS listener, orders nothing while it is not due, replaces it when forced, and keeps
it when the ACME server is gone."""

from __future__ import annotations

import contextlib
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from server_harness import shared_tempdir
from tests.helpers import free_port
from web_harness import (
    Pebble,
    pebble,
    peer_certificate,
    running,
    self_signed_acme_folder,
    worker_argv,
)

from mailstack.acme.files import AcmeFiles
from mailstack.store import MailStore

pytestmark = pytest.mark.daemons  # Debian's pebble: scripts/test-packages.txt

NAMES = ("mail.example.test", "mta-sts.example.test")


def served_certificate(port: int, trust: str | None) -> x509.Certificate:
    """The certificate the HTTPS listener presents; verified against `trust` when given."""
    if trust is None:
        context = ssl._create_unverified_context()  # noqa: S323 - only to read the self-signed one
        return peer_certificate(port, context, NAMES[0])
    return peer_certificate(port, ssl.create_default_context(cadata=trust), NAMES[0])


@dataclass
class Setup:
    database: str
    files: AcmeFiles
    http: int
    https: int

    def argv(self, server: Pebble | None) -> list[str]:
        options = ["--http", f"127.0.0.1:{self.http}", "--https", f"127.0.0.1:{self.https}"]
        options += ["--cert", str(self.files.cert), "--key", str(self.files.key)]
        options += ["--hostname", NAMES[0], "--acme-folder", str(self.files.folder)]
        options += ["--acme-email", "postmaster@example.test"]
        if server is None:  # an ACME server that is not there
            options += ["--acme-directory", f"https://127.0.0.1:{free_port()}/dir"]
        else:
            options += ["--acme-directory", server.directory]
            options += ["--acme-ca-file", str(server.ca_file)]
        for name in NAMES:
            options += ["--acme-name", name]
        return worker_argv(self.database, *options)


@pytest.fixture
def setup(sqlite_store: MailStore) -> Iterator[Setup]:
    sqlite_store.add_domain("example.test")
    folder = shared_tempdir("mailstack-acme-")
    files = self_signed_acme_folder(folder, NAMES[0])
    try:
        yield Setup(str(sqlite_store.engine.url), files, free_port(), free_port())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


SERIAL = r"new certificate for .*: serial ([0-9a-f]+) from (.*), valid until"


def test_certificate_from_pebble_renewed_when_due_or_forced_kept_on_failure(
    setup: Setup,
) -> None:
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(pebble(setup.files.folder.parent, setup.http))
        root = server.issuing_root()
        first_start = stack.enter_context(running(setup.argv(server)))
        first_start.wait_line(r"serving https, http, acme", 30)
        first_start.wait_line(r"ordering a certificate for .*: the certificate in use is self")
        issued = first_start.wait_line(SERIAL)
        assert "Pebble" in issued[2]
        first_start.wait_line(r"the worker's TLS listeners use the certificate in")
        cert = served_certificate(setup.https, root)  # verified: chains to Pebble's root
        assert f"{cert.serial_number:x}" == issued[1]
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(names.get_values_for_type(x509.DNSName)) == set(NAMES)
        first_start.proc.terminate()
        assert first_start.proc.wait(20) == 0

        # a restart with a fresh certificate: not due, nothing ordered, the same one served
        again = stack.enter_context(running(setup.argv(server)))
        again.wait_line(r"certificate serial ([0-9a-f]+) .* not ordering", 30)
        assert f"{served_certificate(setup.https, root).serial_number:x}" == issued[1]

        # forced (as `mailstack tls renew --force` asks): a new order, a new serial served
        setup.files.request_renewal(force=True)
        again.wait_line(r"ordering a certificate for .*: renewal forced")
        renewed = again.wait_line(SERIAL)
        assert renewed[1] != issued[1]
        again.wait_line(r"the worker's TLS listeners use the certificate in")
        assert f"{served_certificate(setup.https, root).serial_number:x}" == renewed[1]

        # the ACME server is gone: the order fails, the certificate in use stays
        stack.close()  # stops the worker and Pebble (in reverse order)
        gone = running(setup.argv(server))
        with gone as worker:
            worker.wait_line(r"not ordering", 30)
            setup.files.request_renewal(force=True)
            kept = rf"order failed, keeping the current certificate \(serial {renewed[1]}\)"
            worker.wait_line(kept)
            worker.wait_line(r"next certificate attempt in 300 s")
            assert f"{served_certificate(setup.https, root).serial_number:x}" == renewed[1]
    assert setup.files.cert.resolve().parent.name != "self-signed"


def test_self_signed_serves_while_no_order_succeeded(setup: Setup) -> None:
    with running(setup.argv(None)) as worker:
        worker.wait_line(r"order failed, keeping the current certificate \(serial [0-9a-f]+\)")
        worker.wait_line(r"next certificate attempt in 300 s")
        served = served_certificate(setup.https, None)
        assert served.issuer == served.subject
        assert setup.files.cert.resolve().parent.name == "self-signed"
