"""App passwords: how they are made and recognised.

An app password is 28 characters of lowercase base32 (`a-z`, `2-7`): an 8-character
`ident` followed by 20 random characters (100 bits). Only its Argon2id hash is stored (the
scheme of account passwords, `passwords.hash_password`), next to the ident in plain.

Why the ident: Dovecot's dict passdb returns one password per lookup, and a user has many
app passwords. Dovecot's second passdb asks for the key `apppass/%u/%0.8w`, the user and
the first 8 characters of the password typed, so the lookup service hands back the one hash
that can match and Dovecot verifies it itself, as for account passwords: the secret part
never leaves Dovecot, a login costs one Argon2 verification per passdb whatever the number
of app passwords, and Dovecot's failure delay and auth penalty apply unchanged. The ident is
not secret (like a key id); a guess that does not start with one costs no verification at all.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from mailstack.store.tokens import validate_token_name

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
IDENT_LENGTH = 8
SECRET_LENGTH = 20
LENGTH = IDENT_LENGTH + SECRET_LENGTH
MAX_PER_USER = 50

_IDENT = re.compile(f"[{ALPHABET}]{{{IDENT_LENGTH}}}")
_PASSWORD = re.compile(f"[{ALPHABET}]{{{LENGTH}}}")


@dataclass(frozen=True)
class AppPasswordInfo:
    """An app password as listed: its name and creation time, never the secret."""

    name: str
    created_at: datetime


def new_app_password() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def ident_of(password: str) -> str:
    return password[:IDENT_LENGTH]


def is_ident(value: str) -> bool:
    """Whether `value` can be an app password's ident (what the passdb key carries)."""
    return _IDENT.fullmatch(value) is not None


def looks_like_app_password(password: str) -> bool:
    return _PASSWORD.fullmatch(password) is not None


def validate_name(value: str) -> str:
    """Letters, digits, `.`, `_` and `-` (`thunderbird-laptop`): safe in a URL path and on a
    command line as they are."""
    return validate_token_name(value, "name")
