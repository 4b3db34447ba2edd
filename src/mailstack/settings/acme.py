"""The types of the ACME settings: the challenge, the DNS-01 provider's server and TSIG key,
and the certificate's names (where `*.example.com` may appear, for DNS-01)."""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from typing import Annotated, Literal, get_args

from mailstack.errors import InvalidInput
from mailstack.names import normalise_domain
from mailstack.settings import values
from mailstack.settings.fields import parsed
from mailstack.settings.sources import ItemList
from mailstack.settings.values import HostPort

DNS_PORT = 53
#: TSIG algorithms (RFC 8945), as BIND's `tsig-keygen -a` and Knot's `keymgr -t` name them;
#: HMAC-MD5 is left out (broken, and no server needs it now)
TsigAlgorithmName = Literal["hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1"]
TSIG_ALGORITHMS: tuple[str, ...] = get_args(TsigAlgorithmName)
WILDCARD = "*."

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def parse_dns_server(raw: str) -> HostPort:
    """`host`, `host:port`, `[ipv6]` or `[ipv6]:port`; port 53 unless given."""
    server = values.parse_relayhost(raw)  # the same forms; brackets mean nothing more here
    return HostPort(server.host, server.port or DNS_PORT)


def parse_key_name(raw: str) -> str:
    """A TSIG key's name: a DNS name (underscores allowed), lower case, no final dot."""
    name = raw.strip().rstrip(".").lower()
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{raw.strip()!r} is not a valid key name (a DNS name, e.g. acme-update)")
    return name


def parse_certificate_names(raw: str) -> tuple[str, ...]:
    """Domains, each perhaps a wildcard `*.example.com` (a whole first label only)."""
    names: list[str] = []
    for item in values.split_items(raw):
        base = item.removeprefix(WILDCARD)
        if "*" in base:
            raise ValueError(f"{item!r}: a wildcard must be a whole first label, *.example.com")
        if base == item:
            names.append(values.parse_domain(item))
            continue
        try:
            names.append(WILDCARD + normalise_domain(base.rstrip(".")))
        except InvalidInput:
            raise ValueError(f"{item!r} is not a valid wildcard name") from None
    return tuple(dict.fromkeys(names))


def base64_problem(secret: str) -> str | None:
    """Why a TSIG secret is not usable (never quoting it), or None."""
    try:
        decoded = b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        return "must be base64, as tsig-keygen or keymgr print it"
    return None if decoded else "must not be empty"


AcmeChallenge = Annotated[Literal["http-01", "dns-01"], parsed(lambda raw: raw.strip().lower())]
TsigAlgorithm = Annotated[TsigAlgorithmName, parsed(lambda raw: raw.strip().lower().rstrip("."))]
DnsServer = Annotated[HostPort | None, parsed(parse_dns_server)]
KeyName = Annotated[str | None, parsed(parse_key_name)]
OptionalDomain = Annotated[str | None, parsed(values.parse_domain)]
CertificateNames = Annotated[tuple[str, ...], ItemList(), parsed(parse_certificate_names)]
