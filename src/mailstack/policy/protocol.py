"""Postfix's SMTP access policy delegation protocol (SMTPD_POLICY_README): a pure codec.

A request is `name=value` lines, each ended by a newline, closed by an empty line; the
answer is one `action=...` line and an empty line. Postfix sends one request at a time and
keeps the connection for the next ones. Unknown attributes are kept (the caller ignores
what it does not use); the value is everything after the first `=`.

Input is bounded: one line, the number of attributes and the whole request. Anything else
(a line without `=`, an empty request, a non-ASCII attribute name, too much data) raises
ProtocolError: the protocol says to log a warning and disconnect, never to guess.
"""

from __future__ import annotations

MAX_LINE = 4096  # bytes of one `name=value` line; Postfix's longest values are addresses
MAX_ATTRIBUTES = 100  # Postfix 3.7 sends about 30
MAX_REQUEST = 32 * 1024  # bytes of one whole request

Request = dict[str, str]


class ProtocolError(ValueError):
    """The peer sent something that is not a policy request; close the connection.

    `requests` are the ones completed before the fault in the same feed (answer them).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.requests: list[Request] = []


class RequestDecoder:
    """Feed it bytes as they arrive; it returns the complete requests, in order."""

    def __init__(
        self,
        *,
        max_line: int = MAX_LINE,
        max_attributes: int = MAX_ATTRIBUTES,
        max_request: int = MAX_REQUEST,
    ) -> None:
        self.max_line = max_line
        self.max_attributes = max_attributes
        self.max_request = max_request
        self._buffer = bytearray()
        self._attributes: Request = {}
        self._used = 0  # bytes of the current request already consumed

    @property
    def pending(self) -> bool:
        """True while part of a request has arrived (the peer owes us the rest)."""
        return bool(self._buffer or self._attributes)

    def feed(self, data: bytes) -> list[Request]:
        self._buffer += data
        requests: list[Request] = []
        try:
            self._decode(requests)
        except ProtocolError as exc:
            exc.requests = requests
            raise
        return requests

    def _decode(self, requests: list[Request]) -> None:
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                self._check_partial()
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._used += end + 1
            if self._used > self.max_request:
                raise ProtocolError(f"request longer than {self.max_request} bytes")
            line = line.removesuffix(b"\r")
            if len(line) > self.max_line:
                raise ProtocolError(f"line longer than {self.max_line} bytes")
            if line:
                self._add(line)
                continue
            if not self._attributes:
                raise ProtocolError("empty request")
            requests.append(self._attributes)
            self._attributes = {}
            self._used = 0

    def _check_partial(self) -> None:
        """Refuse an unterminated line as soon as it is too long, not when it ends."""
        if len(self._buffer) > self.max_line + 1:  # + 1: a line may end with \r\n
            raise ProtocolError(f"line longer than {self.max_line} bytes")
        if self._used + len(self._buffer) > self.max_request:
            raise ProtocolError(f"request longer than {self.max_request} bytes")

    def _add(self, line: bytes) -> None:
        raw_name, equals, raw_value = line.partition(b"=")
        if not equals or not raw_name:
            raise ProtocolError(f"not a name=value line: {line[:60]!r}")
        try:
            name = raw_name.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(f"attribute name is not ASCII: {raw_name[:60]!r}") from None
        if not name.isprintable() or " " in name:
            raise ProtocolError(f"bad attribute name {name[:60]!r}")
        if name not in self._attributes and len(self._attributes) >= self.max_attributes:
            raise ProtocolError(f"more than {self.max_attributes} attributes")
        # SMTPUTF8 addresses arrive as UTF-8; stray bytes cannot make a key that matters
        self._attributes[name] = raw_value.decode("utf-8", errors="replace")


def encode_reply(action: str) -> bytes:
    """`action=<action>` and the empty line that ends the reply."""
    if "\n" in action or "\r" in action:
        raise ValueError("a policy action must be one line")
    return f"action={action}\n\n".encode()
