"""The one place where domains, addresses and sieve script names are normalised.

Settings, the datastore, the lookup service and the admin commands all use these, so a name
has one canonical form everywhere: lower case, domains as IDNA A-labels under UTS 46
(non-transitional: `straße.example` is `xn--strae-oqa.example`, never `strasse.example`).
The datastore stores that form, so a lookup is a single exact match on an index.
"""

from __future__ import annotations

import functools
import re

import idna

from mailstack.errors import InvalidInput

MAX_ADDRESS_LENGTH = 254  # RFC 5321 path limit minus the angle brackets
MAX_LOCAL_PART_LENGTH = 64
MAX_DOMAIN_LENGTH = 253
MAX_SCRIPT_NAME_LENGTH = 128

# dot-atom text of RFC 5322 (ASCII only); quoted local parts are not accepted.
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL_PART = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_ASCII_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _ascii_domain(value: str) -> str | None:
    """Fast path: an already-ASCII domain checked without the IDNA machinery."""
    if not value.isascii():
        return None
    labels = value.split(".")
    if all(_ASCII_LABEL.fullmatch(label) for label in labels):
        # A-labels ("xn--") still go through idna so that invalid punycode is refused.
        return None if any(label.startswith("xn--") for label in labels) else value
    return None


def normalise_domain(value: str, field: str = "domain", *, min_labels: int = 2) -> str:
    """Return the canonical (lower-case A-label) form of a domain, or raise InvalidInput.
    Hosted domains need two labels; a host name in a setting may have one."""
    text = value.strip().lower()
    if not text:
        raise InvalidInput(field, "must not be empty")
    if len(text) > MAX_DOMAIN_LENGTH:
        raise InvalidInput(field, f"is longer than {MAX_DOMAIN_LENGTH} characters")
    result = _ascii_domain(text)
    if result is None:
        try:
            result = idna.encode(text, uts46=True, std3_rules=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise InvalidInput(field, f"{value!r} is not a valid domain name ({exc})") from None
    if result.count(".") + 1 < min_labels:
        raise InvalidInput(field, f"{value!r} needs at least two labels, such as example.com")
    if len(result) > MAX_DOMAIN_LENGTH:
        raise InvalidInput(field, f"is longer than {MAX_DOMAIN_LENGTH} characters once encoded")
    return result


def normalise_local_part(value: str, field: str = "address") -> str:
    """Return the lower-case local part, or raise InvalidInput naming what is wrong."""
    text = value.lower()
    if not text:
        raise InvalidInput(field, "the part before @ must not be empty")
    if len(text) > MAX_LOCAL_PART_LENGTH:
        raise InvalidInput(field, f"the part before @ is longer than {MAX_LOCAL_PART_LENGTH}")
    if not _LOCAL_PART.fullmatch(text):
        raise InvalidInput(
            field,
            f"{value!r} is not a valid local part (ASCII letters, digits and "
            "!#$%&'*+/=?^_`{|}~- separated by single dots)",
        )
    return text


def normalise_address(value: str, field: str = "address") -> str:
    """Return `local@domain` in canonical form, or raise InvalidInput."""
    text = value.strip()
    local, at, domain = text.rpartition("@")
    if not at:
        raise InvalidInput(field, f"{value!r} is not an email address (no @)")
    address = f"{normalise_local_part(local, field)}@{normalise_domain(domain, field)}"
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidInput(field, f"is longer than {MAX_ADDRESS_LENGTH} characters")
    return address


def normalise_alias_source(value: str, field: str = "source") -> str:
    """An alias source is an address, or `@domain` for a catch-all."""
    text = value.strip()
    if text.startswith("@"):
        return "@" + normalise_domain(text[1:], field)
    return normalise_address(text, field)


def split_address(address: str) -> tuple[str, str]:
    """Split a canonical address (or `@domain`) into local part and domain."""
    local, _, domain = address.rpartition("@")
    return local, domain


#: Keys the lookup path normalised last; the same few thousand addresses and domains come
#: back with every message, and normalising one (IDNA rules, a pattern per label) costs more
#: than the indexed query that follows. Pure functions, so a cached answer is never stale.
NORMALISED_CACHE = 4096


@functools.lru_cache(maxsize=NORMALISED_CACHE)
def try_address(value: str) -> str | None:
    """Canonical address or None: the lookup path answers "not found" for junk keys."""
    try:
        return normalise_address(value)
    except InvalidInput:
        return None


@functools.lru_cache(maxsize=NORMALISED_CACHE)
def try_domain(value: str) -> str | None:
    """Canonical domain or None, for lookups."""
    try:
        return normalise_domain(value)
    except InvalidInput:
        return None


def validate_script_name(value: str, field: str = "name") -> str:
    """Sieve script names: printable, no slash (Dovecot and ManageSieve both reject it)."""
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > MAX_SCRIPT_NAME_LENGTH:
        raise InvalidInput(field, f"is longer than {MAX_SCRIPT_NAME_LENGTH} characters")
    if any(not ch.isprintable() for ch in value) or "/" in value:
        raise InvalidInput(field, f"{value!r} must be printable text without '/'")
    return value
