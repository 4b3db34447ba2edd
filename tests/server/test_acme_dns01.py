"""ACME over DNS-01 against Pebble and a private Knot DNS: the worker puts the TXT records in
the zone by RFC 2136 updates signed with TSIG, Pebble's validation reads them from Knot, the
certificate (a name, the zone's apex and a wildcard) is served, and the records are gone
afterwards, also when validation fails; a wrong TSIG secret fails the order with a log line
that names the setting, and the self-signed certificate keeps serving."""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from knot_harness import KEY_NAME, Knot, knot, new_secret
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

pytestmark = pytest.mark.daemons  # Debian's pebble and knot: scripts/test-packages.txt

ZONE = "example.test"
NAMES = ("mail.example.test", "example.test", "*.example.test")
#: the apex and the wildcard are validated at one name, with two TXT values at once
RECORDS = ("_acme-challenge.mail.example.test", "_acme-challenge.example.test")
SERIAL = r"new certificate for .*: serial ([0-9a-f]+) from (.*), valid until"
FAILED = r"order failed, keeping the current certificate \(serial [0-9a-f]+\): (.*)"


@dataclass
class Setup:
    folder: Path
    database: str
    files: AcmeFiles
    https: int
    dns: Knot

    def worker(self, server: Pebble, secret: str) -> contextlib.AbstractContextManager:
        """The worker with HTTPS only (no HTTP listener: nothing but DNS-01 can validate)."""
        options = ["--https", f"127.0.0.1:{self.https}", "--hostname", NAMES[0]]
        options += ["--cert", str(self.files.cert), "--key", str(self.files.key)]
        options += ["--acme-folder", str(self.files.folder)]
        options += ["--acme-email", "postmaster@example.test"]
        options += ["--acme-directory", server.directory, "--acme-ca-file", str(server.ca_file)]
        for name in NAMES:
            options += ["--acme-name", name]
        options += ["--acme-challenge", "dns-01", "--acme-dns-server", self.dns.server]
        options += ["--acme-dns-tsig-key-name", KEY_NAME]
        env = {**os.environ, "MAILSTACK_ACME_DNS_TSIG_SECRET": secret}
        return running(worker_argv(self.database, *options), env)

    def served(self, trust: str | None, name: str = NAMES[0]) -> x509.Certificate:
        """The HTTPS listener's certificate, verified for `name` against `trust` if given."""
        if trust is None:
            context = ssl._create_unverified_context()  # noqa: S323 - to read the self-signed one
            return peer_certificate(self.https, context, name)
        return peer_certificate(self.https, ssl.create_default_context(cadata=trust), name)

    def records_left(self) -> list[str]:
        return [value for record in RECORDS for value in self.dns.txt(record)]


@pytest.fixture
def setup(sqlite_store: MailStore) -> Iterator[Setup]:
    sqlite_store.add_domain(ZONE)
    folder = shared_tempdir("mailstack-dns01-")
    files = self_signed_acme_folder(folder, NAMES[0])
    try:
        with knot(folder / "knot", ZONE) as dns:
            yield Setup(folder, str(sqlite_store.engine.url), files, free_port(), dns)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_certificate_for_a_name_and_a_wildcard_over_dns01(setup: Setup) -> None:
    with (
        pebble(setup.folder, free_port(), setup.dns.server) as server,
        setup.worker(server, setup.dns.secret) as worker,
    ):
        root = server.issuing_root()
        worker.wait_line(r"ordering a certificate for .* over DNS-01: the certificate in use is")
        worker.wait_line(r"TXT record at _acme-challenge\.example\.test added on 127\.0\.0\.1")
        issued = worker.wait_line(SERIAL, 120)
        assert "Pebble" in issued[2]
        worker.wait_line(r"the worker's TLS listeners use the certificate in")
        cert = setup.served(root)  # verified: chains to Pebble's root
        assert f"{cert.serial_number:x}" == issued[1]
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(names.get_values_for_type(x509.DNSName)) == set(NAMES)
        # a name that only the wildcard covers passes a client's host name check
        assert setup.served(root, "webmail.example.test").serial_number == cert.serial_number
        assert setup.records_left() == []
        assert worker.proc.poll() is None
        assert setup.dns.secret not in worker.output()
    assert setup.dns.serial() > 1  # each update (add, remove) made a new version of the zone


def test_records_removed_when_validation_fails(setup: Setup) -> None:
    """Pebble asks its own DNS server, which has no TXT records: validation fails, and
    the records the worker added to Knot are removed all the same."""
    with pebble(setup.folder, free_port()) as server, setup.worker(server, setup.dns.secret) as w:
        w.wait_line(r"TXT record at _acme-challenge\.\S+ added")
        failed = w.wait_line(FAILED, 120)
        assert "Challenge dns-01 failed" in failed[1], failed[1]
        w.wait_line(r"next certificate attempt in 300 s")
        assert w.output().count("removed on 127.0.0.1") == w.output().count("added on 127.0.0.1")
        assert setup.records_left() == []
        assert setup.served(None).issuer == setup.served(None).subject
        assert w.proc.poll() is None


def test_wrong_tsig_secret_fails_clearly_and_keeps_the_self_signed_certificate(
    setup: Setup,
) -> None:
    wrong = new_secret()
    with (
        pebble(setup.folder, free_port(), setup.dns.server) as server,
        setup.worker(server, wrong) as worker,
    ):
        failed = worker.wait_line(FAILED, 120)
        assert "BADSIG" in failed[1], failed[1]
        assert "MAILSTACK_ACME_DNS_TSIG_SECRET" in failed[1], failed[1]
        worker.wait_line(r"next certificate attempt in 300 s")
        served = setup.served(None)
        assert served.issuer == served.subject  # still the self-signed one
        assert setup.files.cert.resolve().parent.name == "self-signed"
        assert setup.records_left() == []
        assert worker.proc.poll() is None  # the worker goes on, and retries later
        assert wrong not in worker.output()
        assert setup.dns.serial() == 1  # the zone was never changed
