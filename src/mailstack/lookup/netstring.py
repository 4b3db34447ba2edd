"""Netstrings (`<length>:<payload>,`), the framing of Postfix's socketmap protocol.

Pure functions, no I/O. `decode` works on a growing buffer and says as early as possible
that the input can never become a netstring, so a server can answer garbage at once
instead of waiting for a ':' that will never come.
"""

from __future__ import annotations

MAX_LENGTH_DIGITS = 10


class NetstringError(ValueError):
    """The bytes are not, and can never become, a valid netstring."""


def encode(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def decode(buffer: bytes | bytearray, max_length: int) -> tuple[bytes, int] | None:
    """Decode the first netstring in `buffer`.

    Returns `(payload, bytes_consumed)`, or None when more input is needed. Raises
    NetstringError for a bad length prefix, a length over `max_length`, or a missing comma.
    """
    colon = buffer.find(b":", 0, MAX_LENGTH_DIGITS + 1)
    if colon < 0:
        prefix = bytes(buffer[: MAX_LENGTH_DIGITS + 1])
        if len(prefix) > MAX_LENGTH_DIGITS or (prefix and not prefix.isdigit()):
            raise NetstringError(f"bad length prefix {prefix[:20]!r}")
        return None
    prefix = bytes(buffer[:colon])
    if not prefix.isdigit() or (len(prefix) > 1 and prefix.startswith(b"0")):
        raise NetstringError(f"bad length prefix {prefix[:20]!r}")
    length = int(prefix)
    if length > max_length:
        raise NetstringError(f"netstring of {length} bytes exceeds the limit of {max_length}")
    end = colon + 1 + length
    if len(buffer) <= end:
        return None
    if buffer[end : end + 1] != b",":
        raise NetstringError("netstring does not end with ','")
    return bytes(buffer[colon + 1 : end]), end + 1
