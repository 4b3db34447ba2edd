"""Password hashes that Dovecot verifies itself.

The store keeps `{ARGON2ID}$argon2id$...`: the `{SCHEME}` prefix tells Dovecot's passdb how
to verify, so the lookup service never sees or checks a plain password. Argon2id costs
follow the OWASP minimum (19 MiB, 2 passes) rather than Dovecot's 64 MiB default: every
IMAP/SMTP login runs one verification inside Dovecot's auth worker, and the server profile
targets small machines.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailstack.store.errors import InvalidInput

SCHEME = "ARGON2ID"
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024

# Schemes accepted when importing an existing hash (all listed by `doveadm pw -l`).
IMPORTABLE_SCHEMES = frozenset(
    {"ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "SSHA512", "SSHA256"}
)

_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


def check_password(password: str, field: str = "password") -> None:
    """Refuse passwords Dovecot or a mail client would mangle, and trivially short ones."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(field, f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(field, f"must be at most {MAX_PASSWORD_LENGTH} characters")
    if any(ch in password for ch in "\x00\r\n\t"):
        raise InvalidInput(field, "must not contain NUL, tab or line breaks")


def hash_password(password: str) -> str:
    """Hash with Argon2id and prefix the Dovecot scheme name."""
    check_password(password)
    return f"{{{SCHEME}}}{_hasher.hash(password)}"


def scheme_of(stored: str) -> str | None:
    """The `{SCHEME}` of a stored hash, or None when it has no prefix."""
    if stored.startswith("{") and "}" in stored:
        return stored[1 : stored.index("}")].upper()
    return None


def check_imported_hash(stored: str, field: str = "password_hash") -> str:
    """Accept an existing hash only if it carries a scheme Dovecot verifies natively."""
    scheme = scheme_of(stored)
    if scheme is None or scheme not in IMPORTABLE_SCHEMES:
        allowed = ", ".join(sorted(IMPORTABLE_SCHEMES))
        raise InvalidInput(field, f"must start with one of {{{allowed}}}")
    if any(ch in stored for ch in "\x00\r\n\t"):
        raise InvalidInput(field, "must not contain NUL, tab or line breaks")
    return stored


def verify_password(stored: str, password: str) -> bool:
    """Check a password against a stored Argon2id hash (for the admin UI's own login)."""
    if scheme_of(stored) != SCHEME:
        return False
    try:
        return _hasher.verify(stored[len(SCHEME) + 2 :], password)
    except (VerificationError, InvalidHashError):
        return False


_dummy_hash: str | None = None


def spend_verification_time(password: str) -> None:
    """Verify against a throwaway hash: a login for an unknown or disabled account costs as
    long as one for a real account, so timing does not tell which accounts exist."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password("not a password of anyone")
    verify_password(_dummy_hash, password)


_unusable_hash: str | None = None


def unusable_hash() -> str:
    """A real Argon2id hash (same costs) of a random secret nobody ever saw, made once per
    process: what the passdb hands Dovecot for an account password that must not work (TOTP
    on), so that refusing it costs the same verification as a wrong password."""
    global _unusable_hash
    if _unusable_hash is None:
        _unusable_hash = hash_password(secrets.token_urlsafe(32))
    return _unusable_hash
