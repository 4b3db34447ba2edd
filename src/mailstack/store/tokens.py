"""Bearer tokens of the admin REST API: how they are made, named and stored.

A token is `mst_` and 32 random bytes (256 bits, URL-safe base64). The datastore keeps only
its SHA-256: a token is not a password a person chose, so nothing can be guessed from a
leaked hash and a slow hash (Argon2, as for passwords) would add no safety, only tens of
milliseconds and a burst of memory to every API request. Looking the hash up with one
indexed equality also means no comparison of secrets happens in Python at all.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from mailstack.store.errors import InvalidInput

PREFIX = "mst_"
RANDOM_BYTES = 32
MAX_TOKEN_LENGTH = 128  # longer is not one of ours; refused before hashing
MAX_NAME_LENGTH = 64

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class TokenInfo:
    """A token as shown to administrators: its name and whom it acts for, never the secret.
    `user` None is an admin token."""

    name: str
    user: str | None
    created_at: datetime

    @property
    def admin(self) -> bool:
        return self.user is None


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(RANDOM_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(token: str) -> bool:
    return token.startswith(PREFIX) and len(token) <= MAX_TOKEN_LENGTH and token.isascii()


def validate_token_name(value: str, field: str = "name") -> str:
    """Letters, digits, `.`, `_` and `-`, starting with a letter or digit; up to 64."""
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInput(field, f"is longer than {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(value):
        raise InvalidInput(field, f"{value!r} may only hold letters, digits, '.', '_' and '-'")
    return value
