"""The Dovecot 2.3 dict proxy protocol: line codec and reply formatting, no I/O.

Dovecot's dict client (lib-dict/dict-client.c) sends one command per line, after a HELLO; the first
byte names the command and fields are separated by tabs, each "tab-escaped" (\\x01 is the
escape byte). Replies the client understands: `O<value>` found, `N` not found,
`F<error>` failure; iteration rows are `O<key>\\t<value>` ended by an empty line.
Only LOOKUP and COMMIT expect a reply; BEGIN/SET/UNSET/ATOMIC_INC/ROLLBACK do not.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dovecot 2.3 up to 2.3.x speaks major version 2 with the user only in HELLO; 2.3.19
# (Debian 12) already sends major 3: an empty HELLO user and the user appended as a last
# field to LOOKUP (`L<key>\t<user>`), ITERATE and BEGIN. Both are accepted.
PROTOCOL_MAJORS = frozenset({2, 3})
MAX_LINE = 64 * 1024  # DICT_CLIENT_MAX_LINE_LENGTH

HELLO = "H"
LOOKUP = "L"
ITERATE = "I"
BEGIN = "B"
COMMIT = "C"
COMMIT_ASYNC = "D"
ROLLBACK = "R"
SET = "S"
UNSET = "U"
ATOMIC_INC = "A"
TIMESTAMP = "T"
NO_REPLY = frozenset({BEGIN, ROLLBACK, SET, UNSET, ATOMIC_INC, TIMESTAMP})

ITERATE_FLAG_NO_VALUE = 0x08

_ESCAPES = {"\x00": "\x010", "\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}
_UNESCAPES = {"0": "\x00", "1": "\x01", "t": "\t", "r": "\r", "n": "\n"}


class DictProtocolError(ValueError):
    """A line that is not a command this server understands."""


def escape(value: str) -> str:
    """Tab-escape one field (Dovecot's str_tabescape)."""
    if not any(ch in value for ch in _ESCAPES):
        return value
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def unescape(value: str) -> str:
    """Undo `escape`; a dangling or unknown escape keeps the following character."""
    if "\x01" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\x01":
            nxt = next(chars, "")
            out.append(_UNESCAPES.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


def split_fields(text: str) -> list[str]:
    return [unescape(field) for field in text.split("\t")]


@dataclass(frozen=True)
class Command:
    """One parsed request line: the command letter and its unescaped fields."""

    name: str
    args: tuple[str, ...]


def parse_line(line: str) -> Command:
    if not line:
        raise DictProtocolError("empty command line")
    name, rest = line[0], line[1:]
    if name not in {HELLO, LOOKUP, ITERATE, COMMIT, COMMIT_ASYNC} | NO_REPLY:
        raise DictProtocolError(f"unknown command {name!r}")
    return Command(name, tuple(split_fields(rest)))


@dataclass(frozen=True)
class Hello:
    major: int
    minor: int
    value_type: int
    user: str
    dict_name: str


def parse_hello(command: Command) -> Hello:
    """`H<major>\\t<minor>\\t<value type>\\t<user>\\t<dict name>`."""
    args = command.args
    if len(args) < 3:
        raise DictProtocolError("HELLO needs at least major, minor and value type")
    try:
        major, minor, value_type = int(args[0]), int(args[1]), int(args[2])
    except ValueError:
        raise DictProtocolError("HELLO version fields must be numbers") from None
    if major not in PROTOCOL_MAJORS:
        raise DictProtocolError(f"unsupported dict protocol major version {major}")
    user = args[3] if len(args) > 3 else ""
    dict_name = args[4] if len(args) > 4 else ""
    return Hello(major, minor, value_type, user, dict_name)


def reply_ok(value: str) -> str:
    return f"O{escape(value)}\n"


def reply_not_found() -> str:
    return "N\n"


def reply_fail(error: str) -> str:
    return f"F{escape(error)}\n"


def reply_row(key: str, value: str) -> str:
    return f"O{escape(key)}\t{escape(value)}\n"


def reply_iter_end() -> str:
    return "\n"


def reply_iter_fail(error: str) -> str:
    return f"F{escape(error)}\n"


def reply_commit_fail(transaction_id: str, error: str) -> str:
    return f"F{escape(transaction_id)}\t{escape(error)}\n"
