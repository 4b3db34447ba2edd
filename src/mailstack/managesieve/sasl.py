"""The SASL mechanisms password clients use: PLAIN (RFC 4616) and LOGIN.

Only the decoding lives here; the session runs the challenge/response exchange. The
credentials object never shows the password in its repr, so a stray log line cannot leak it.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import Protocol


class SaslError(Exception):
    """The client's SASL data is malformed."""


@dataclass(frozen=True)
class Credentials:
    """Who logs in (username), as whom (authzid, usually empty), with which password."""

    authzid: str
    username: str
    password: str = field(repr=False)


def decode_base64(data: bytes) -> bytes:
    """Strict base64; "=" is an empty initial response, as in SASL-IR."""
    if data == b"=":
        return b""
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise SaslError("the SASL data is not valid base64") from None


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"the {what} is not valid UTF-8") from None


class Mechanism(Protocol):
    """One SASL exchange: the next challenge to send, and what the client answered."""

    def challenge(self) -> bytes: ...

    def step(self, response: bytes) -> Credentials | None: ...


class Plain:
    """`authzid NUL username NUL password` in one response, after an empty challenge."""

    def challenge(self) -> bytes:
        return b""

    def step(self, response: bytes) -> Credentials:
        parts = response.split(b"\x00")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SaslError("PLAIN expects authzid, username and password separated by NUL")
        authzid, username, password = (_text(p, "credentials") for p in parts)
        return Credentials(authzid, username, password)


class Login:
    """The legacy LOGIN mechanism: the username, then the password, each asked for."""

    def __init__(self) -> None:
        self.username: str | None = None

    def challenge(self) -> bytes:
        return b"Username:" if self.username is None else b"Password:"

    def step(self, response: bytes) -> Credentials | None:
        if self.username is None:
            self.username = _text(response, "username")
            if not self.username:
                raise SaslError("the username is empty")
            return None
        return Credentials("", self.username, _text(response, "password"))


MECHANISMS: dict[str, type[Plain] | type[Login]] = {"PLAIN": Plain, "LOGIN": Login}
