"""The server's TLS certificate: the user's own, or a self-signed one made on first start.

A self-signed certificate lets IMAP, submission and STARTTLS on the MX work from the first
minute; mail clients will warn about it, so the log says how to supply a real one.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailstack.runtime.files import write_atomic

log = logging.getLogger("mailstack.tls")

SELF_SIGNED_DAYS = 825


def self_signed_pair(hostname: str, days: int = SELF_SIGNED_DAYS) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for `hostname`, ECDSA P-256."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        alt_names.append(x509.DNSName("localhost"))
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_certificate(folder: Path, hostname: str) -> tuple[Path, Path]:
    """The self-signed pair in `folder`, made once and kept across restarts."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    if not (cert.is_file() and key.is_file()):
        cert_pem, key_pem = self_signed_pair(hostname)
        write_atomic(key, key_pem.decode("ascii"), 0o600)
        write_atomic(cert, cert_pem.decode("ascii"), 0o644)
        log.warning(
            "no TLS certificate given: made a self-signed one for %s in %s; mail clients will "
            "warn about it. Set MAILSTACK_TLS_CERT_FILE and MAILSTACK_TLS_KEY_FILE to use yours",
            hostname,
            folder,
        )
    else:
        log.warning(
            "using the self-signed TLS certificate in %s (set MAILSTACK_TLS_CERT_FILE and "
            "MAILSTACK_TLS_KEY_FILE to use a real one)",
            folder,
        )
    return cert, key
