"""ManageSieve's wire format (RFC 5804 section 4): commands in, responses out.

A command is a line of atoms and strings. A string is quoted (`"..."`, with only `\\"` and
`\\\\` escaped) or a literal: `{n+}` (or `{n}`, which ManageSieve clients also send without
waiting) ends the line and n octets follow, after which the command goes on. Every size is
checked before anything is buffered, so a client never makes the server hold more than one
line and a few literals of bounded size.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

CRLF = b"\r\n"
MAX_LINE = 8192  # bytes per command line, literals excluded
MAX_LITERALS = 4  # per command: no command takes more than three strings
MAX_QUOTED_RESPONSE = 1024  # longer response strings are sent as literals
_DISCARD_CHUNK = 64 * 1024

_LITERAL_AT_END = re.compile(rb"\{(\d{1,12})\+?\}$")
_ATOM = re.compile(rb"[!#-'*-~]+")  # printable ASCII without space, quote, parentheses


@dataclass(frozen=True)
class Atom:
    """A bare word: a command name, a number or a keyword such as ACTIVE."""

    text: str


@dataclass(frozen=True)
class String:
    """A quoted string or a literal, as the octets received."""

    data: bytes

    def text(self) -> str:
        """The string as text; ManageSieve strings are UTF-8."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError("a string is not valid UTF-8") from None


Token = Atom | String


class CommandError(Exception):
    """The command was read to its end but is wrong: answer NO and read the next one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class BadCommand(CommandError):
    """The command does not follow the grammar; too many of these in a row end the session."""


class FatalError(Exception):
    """The stream cannot be followed any more: answer BYE and close the connection."""


class IdleTimeout(Exception):
    """The client sent nothing for too long."""


def scan_line(line: bytes) -> tuple[list[Token], int | None]:
    """Split one line into tokens, and the size of the literal that ends it, if any."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(line):
        char = line[pos : pos + 1]
        if char == b" ":
            pos += 1
        elif char == b'"':
            data, pos = _quoted(line, pos + 1)
            tokens.append(String(data))
        elif char == b"{":
            match = _LITERAL_AT_END.match(line, pos)
            if match is None:
                raise BadCommand("a literal must be {number+} at the end of the line")
            return tokens, int(match.group(1))
        else:
            end = line.find(b" ", pos)
            end = len(line) if end < 0 else end
            word = line[pos:end]
            if not _ATOM.fullmatch(word):
                raise BadCommand("unexpected characters; strings must be quoted")
            tokens.append(Atom(word.decode("ascii")))
            pos = end
    return tokens, None


def _quoted(line: bytes, pos: int) -> tuple[bytes, int]:
    """The body of a quoted string starting after its opening quote, and where it ends."""
    out = bytearray()
    while pos < len(line):
        char = line[pos : pos + 1]
        if char == b'"':
            return bytes(out), pos + 1
        if char == b"\\":
            escaped = line[pos + 1 : pos + 2]
            if escaped not in (b'"', b"\\"):
                raise BadCommand('only \\" and \\\\ may be escaped in a quoted string')
            out += escaped
            pos += 2
            continue
        if char == b"\x00":
            raise BadCommand("a quoted string must not contain NUL")
        out += char
        pos += 1
    raise BadCommand("a quoted string is not closed")


class CommandReader:
    """Reads whole commands (lines plus literals) within the limits, from a StreamReader."""

    def __init__(self, reader: asyncio.StreamReader, *, max_literal: int, idle: float) -> None:
        self.reader = reader
        self.max_literal = max_literal
        self.max_discard = 0
        self.idle = idle
        self.set_limits(max_literal, idle)

    def set_limits(self, max_literal: int, idle: float, *, discard: bool = True) -> None:
        """Literal size and idle timeout from now on. With `discard`, literals up to four
        times the limit are read and dropped so that the client can be told NO and go on;
        bigger ones (any oversized one without it) end the connection."""
        self.max_literal = max_literal
        self.max_discard = max(4 * max_literal, 16 * 1024 * 1024) if discard else max_literal
        self.idle = idle

    async def line(self) -> bytes:
        """One line without its CRLF (a bare LF is accepted too)."""
        try:
            async with asyncio.timeout(self.idle):
                raw = await self.reader.readuntil(b"\n")
        except TimeoutError:
            raise IdleTimeout from None
        except asyncio.LimitOverrunError:
            raise FatalError(f"line longer than {MAX_LINE} bytes") from None
        line = raw[:-1]
        return line[:-1] if line.endswith(b"\r") else line

    async def _literal(self, size: int) -> bytes | None:
        """The literal's octets, or None if it was too big and was skipped."""
        try:
            async with asyncio.timeout(self.idle):
                if size <= self.max_literal:
                    return await self.reader.readexactly(size)
                if size > self.max_discard:
                    raise FatalError(f"literal of {size} bytes is far over the limit")
                remaining = size
                while remaining:
                    chunk = await self.reader.read(min(remaining, _DISCARD_CHUNK))
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", remaining)
                    remaining -= len(chunk)
                return None
        except TimeoutError:
            raise IdleTimeout from None

    async def command(self) -> list[Token]:
        """The tokens of the next command; CommandError once it has been read entirely."""
        tokens: list[Token] = []
        error: CommandError | None = None
        literals = 0
        while True:
            line = await self.line()
            try:
                part, literal = scan_line(line)
            except CommandError as exc:
                error = error or exc
                match = _LITERAL_AT_END.search(line)  # keep in step with the client anyway
                part, literal = [], int(match.group(1)) if match else None
            tokens.extend(part)
            if literal is None:
                break
            literals += 1
            if literals > MAX_LITERALS:
                raise FatalError("too many literals in one command")
            data = await self._literal(literal)
            if data is None:
                error = error or CommandError(
                    f"string of {literal} bytes is over the limit of {self.max_literal}",
                    "QUOTA/MAXSIZE",
                )
            else:
                tokens.append(String(data))
        if error is not None:
            raise error
        return tokens


def encode_string(text: str) -> bytes:
    """A response string: quoted when it can be, else a literal."""
    data = text.encode("utf-8")
    if len(data) <= MAX_QUOTED_RESPONSE and not any(c in data for c in b"\r\n\x00"):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def status(kind: str, text: str | None = None, code: bytes | str | None = None) -> bytes:
    """An `OK`/`NO`/`BYE` line with optional response code and human-readable text."""
    parts = [kind.encode("ascii")]
    if code is not None:
        parts.append(b"(" + (code.encode("ascii") if isinstance(code, str) else code) + b")")
    if text is not None:
        parts.append(encode_string(text))
    return b" ".join(parts) + CRLF


def capability_lines(items: list[tuple[str, str | None]]) -> bytes:
    """`"NAME" "value"` (or just `"NAME"`) lines, as the greeting and CAPABILITY send them."""
    lines = []
    for name, value in items:
        line = encode_string(name)
        if value is not None:
            line += b" " + encode_string(value)
        lines.append(line + CRLF)
    return b"".join(lines)
