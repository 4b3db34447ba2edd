"""Find, generate and describe DKIM keys.

Keys live flat in one folder, `<domain>.private` beside `<domain>.txt` (the DNS record), the
layout of the boky/postfix image, so existing key volumes work unchanged. The selector is not
part of the file name: it comes from DKIM_SELECTOR at every start.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

KEY_BITS = 2048


@dataclass(frozen=True)
class DomainKey:
    """One signing identity: the domain, its selector and the private key file."""

    domain: str
    selector: str
    private_key: Path

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def key_path(keys_dir: Path, domain: str) -> Path:
    return keys_dir / f"{domain}.private"


def domains_with_keys(keys_dir: Path) -> list[str]:
    """Domains that have a `<domain>.private` file, sorted."""
    if not keys_dir.is_dir():
        return []
    return sorted(p.name.removesuffix(".private") for p in keys_dir.glob("*.private"))


def public_key_b64(private_pem: bytes) -> str:
    """The `p=` value: base64 of the DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization  # see generate_private_key

    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def dns_record_value(private_pem: bytes) -> str:
    """The TXT record's text, as one string."""
    return f"v=DKIM1; h=sha256; k=rsa; s=email; p={public_key_b64(private_pem)}"


def render_txt(selector: str, domain: str, private_pem: bytes) -> str:
    """A `<domain>.txt` in the zone-file shape opendkim-genkey writes (strings of <= 255)."""
    value = dns_record_value(private_pem)
    chunks = [value[i : i + 250] for i in range(0, len(value), 250)]
    quoted = "\n\t  ".join(f'"{chunk}"' for chunk in chunks)
    return (
        f"{selector}._domainkey\tIN\tTXT\t( {quoted} )  ; ----- DKIM key {selector} for {domain}\n"
    )


def parse_txt(text: str) -> str:
    """The record value from a `<domain>.txt` file: its quoted strings joined."""
    return "".join(re.findall(r'"([^"]*)"', text))


def generate_private_key() -> bytes:
    """cryptography is loaded here, not with the module: the worker reads selectors and
    key paths from this module and never makes a key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


class KeyUnreadable(Exception):
    """The domain's key or record file exists but cannot be read or makes no record."""


def published_value(private: Path, domain: str) -> str | None:
    """The TXT value to publish for `domain`'s key file `private`; None when there is no
    such file (yet).

    Derived from the private key, the file OpenDKIM signs with. A process that may not read
    it (the worker is not root) gets the value from the `.txt` written beside it.
    """
    try:
        pem = private.read_bytes()
    except FileNotFoundError:
        return None
    except PermissionError:
        return _txt_value(private.with_suffix(".txt"), domain)
    except OSError as exc:
        raise KeyUnreadable(f"cannot read the DKIM key of {domain}: {exc.strerror}") from None
    try:
        return dns_record_value(pem)
    except (ValueError, TypeError):
        raise KeyUnreadable(f"the DKIM key of {domain} is not a PEM private key") from None


def _txt_value(record_file: Path, domain: str) -> str:
    try:
        value = parse_txt(record_file.read_text())
    except OSError as exc:
        raise KeyUnreadable(f"cannot read the DKIM record of {domain}: {exc.strerror}") from None
    if not value.startswith("v=DKIM1"):
        raise KeyUnreadable(f"the DKIM record file of {domain} holds no record")
    return value
