"""What a certificate says, and when it is due: at two thirds of its lifetime, at once when it
does not cover the server's names or was not issued by a CA (the self-signed start)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

RENEW_AT = 2 / 3


@dataclass(frozen=True)
class CertificateInfo:
    path: Path
    names: tuple[str, ...]
    issuer: str
    subject: str
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime

    @property
    def self_signed(self) -> bool:
        return self.issuer == self.subject

    @property
    def serial_hex(self) -> str:
        return f"{self.serial:x}"

    @property
    def renew_after(self) -> datetime.datetime:
        return self.not_before + (self.not_after - self.not_before) * RENEW_AT

    def covers(self, names: tuple[str, ...]) -> bool:
        return {n.lower() for n in names} <= {n.lower() for n in self.names}


def _name(name: x509.Name) -> str:
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else name.rfc4514_string()


def read_certificate(path: Path) -> CertificateInfo:
    """The first certificate of a PEM file (the leaf of a chain)."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(alt.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertificateInfo(
        path=path,
        names=names,
        issuer=_name(cert.issuer),
        subject=_name(cert.subject),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def renewal_reason(
    info: CertificateInfo | None, names: tuple[str, ...], now: datetime.datetime
) -> str | None:
    """Why a new certificate is needed now; None when the current one is good."""
    if info is None:
        return "no certificate yet"
    if info.self_signed:
        return "the certificate in use is self-signed"
    if not info.covers(names):
        missing = sorted(set(names) - set(info.names))
        return f"the certificate does not cover {', '.join(missing)}"
    if now >= info.renew_after:
        return f"two thirds of its lifetime passed on {info.renew_after:%Y-%m-%d %H:%M} UTC"
    return None
