"""The whole server profile with ACME over DNS-01, its HTTP listener off: the settings (the
TSIG secret from a file) reach the worker, which updates a private Knot DNS; Pebble reads the
TXT records there and issues a certificate with a wildcard name, which IMAPS and submission
present; the records are gone afterwards and the secret is in no log line."""

from __future__ import annotations

import smtplib
import ssl

import pytest
from cryptography import x509
from knot_harness import KEY_NAME, knot
from mailserver import PASSWORD, Ports, running_server, server_env
from tests.helpers import free_port, private_root, wait_for
from web_harness import pebble, peer_certificate, store_with_user

pytestmark = pytest.mark.daemons

HOSTNAME = "mx.example.com"
SERIAL = r"new certificate for .*: serial ([0-9a-f]+)"


def test_server_gets_a_wildcard_certificate_over_dns01() -> None:
    with private_root() as root:
        store_with_user(root, "example.com", "alice@example.com", PASSWORD)
        ports = Ports()
        with (
            knot(root / "knot", "example.com") as dns,
            pebble(root, free_port(), dns.server) as ca,
        ):
            secret_file = root / "tsig.secret"
            secret_file.write_text(dns.secret + "\n")
            env = server_env(
                root,
                ports,
                POSTFIX_myhostname=HOSTNAME,
                MAILSTACK_LISTEN_HTTP="",  # no port 80: nothing but DNS-01 can validate
                MAILSTACK_TLS_NAMES="*.example.com",
                MAILSTACK_ACME_EMAIL="postmaster@example.com",
                MAILSTACK_ACME_DIRECTORY=ca.directory,
                MAILSTACK_ACME_CA_FILE=str(ca.ca_file),
                MAILSTACK_ACME_CHALLENGE="dns-01",
                MAILSTACK_ACME_DNS_SERVER=dns.server,
                MAILSTACK_ACME_DNS_TSIG_KEY_NAME=KEY_NAME,
                MAILSTACK_ACME_DNS_TSIG_SECRET_FILE=str(secret_file),
            )
            trust = ca.issuing_root()
            with running_server(root, env) as mail:
                wait_for(
                    lambda: "new certificate for" in mail.log, 90, f"a certificate\n{ca.log()}"
                )
                [serial] = [m for m in mail.log.splitlines() if "new certificate for" in m]
                wildcard_ok = ssl.create_default_context(cadata=trust)

                def presented() -> x509.Certificate | None:
                    try:
                        return peer_certificate(ports.imaps, wildcard_ok, "imap.example.com")
                    except (ssl.SSLError, OSError):
                        return None  # the self-signed one, until the supervisor's reload

                wait_for(lambda: presented() is not None, 30, f"IMAPS with it\n{mail.log}")
                cert = presented()
                assert cert is not None
                assert f"{cert.serial_number:x}" in serial
                names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                assert set(names.value.get_values_for_type(x509.DNSName)) == {
                    HOSTNAME,
                    "*.example.com",
                }
                chain_only = ssl.create_default_context(cadata=trust)
                chain_only.check_hostname = False  # the client connects to 127.0.0.1
                with smtplib.SMTP("127.0.0.1", ports.submission, timeout=10) as smtp:
                    smtp.starttls(context=chain_only)  # fails unless it chains to Pebble
                    der = smtp.sock.getpeercert(binary_form=True)
                assert der is not None
                assert x509.load_der_x509_certificate(der).serial_number == cert.serial_number
                assert dns.txt("_acme-challenge.example.com") == []
                assert dns.txt("_acme-challenge.mx.example.com") == []
                assert dns.secret not in mail.log
