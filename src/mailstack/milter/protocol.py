"""The Sendmail milter protocol as Postfix speaks it (version 6): a pure codec, no I/O.

Every packet is a 4-byte big-endian length, then that many bytes: one command (or reply)
byte and its data. Strings in the data are NUL-terminated. Postfix opens the conversation
with OPTNEG (version, the actions a filter may take, the protocol steps it may skip); the
filter answers with its own three numbers, optionally followed by the macro names it wants
per stage. After that Postfix sends one command per SMTP (or message) event, each preceded
by a MACRO packet for the stage, and waits for one reply unless the filter negotiated
"no reply" for that event.

Only what the sender milter needs is decoded here: OPTNEG, MACRO and HEADER. Malformed
input raises ProtocolError; after one, the stream cannot be trusted to be in sync.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

VERSION = 6  # the newest protocol version Postfix implements

# Commands from the MTA (SMFIC_*).
ABORT = b"A"
BODY = b"B"
CONNECT = b"C"
MACRO = b"D"
END_OF_BODY = b"E"
HELO = b"H"
QUIT_NEW_CONNECTION = b"K"
HEADER = b"L"
MAIL = b"M"
END_OF_HEADERS = b"N"
OPTNEG = b"O"
QUIT = b"Q"
RCPT = b"R"
DATA = b"T"
UNKNOWN = b"U"

# Replies to the MTA (SMFIR_*).
REPLY_ACCEPT = b"a"
REPLY_CONTINUE = b"c"
REPLY_TEMPFAIL = b"t"
REPLY_CODE = b"y"

# Actions a filter may ask for (SMFIF_*): this one only ever asks for its macro list.
ACTION_SETSYMLIST = 0x100

# Protocol flags (SMFIP_*): events the MTA need not send, replies the filter will not send.
NO_CONNECT = 0x1
NO_HELO = 0x2
NO_MAIL = 0x4
NO_RCPT = 0x8
NO_BODY = 0x10
NO_HEADERS = 0x20
NO_EOH = 0x40
NO_REPLY_HEADER = 0x80
NO_UNKNOWN = 0x100
NO_DATA = 0x200
NO_REPLY_CONNECT = 0x1000
NO_REPLY_HELO = 0x2000
NO_REPLY_MAIL = 0x4000
NO_REPLY_RCPT = 0x8000
NO_REPLY_DATA = 0x10000
NO_REPLY_UNKNOWN = 0x20000
NO_REPLY_EOH = 0x40000
NO_REPLY_BODY = 0x80000

#: The steps the sender check never looks at. MAIL stays (its MACRO packet carries
#: {auth_authen}), and so do the headers and the end of headers, where the verdict is given.
SKIPPED_STEPS = NO_CONNECT | NO_HELO | NO_RCPT | NO_BODY | NO_UNKNOWN | NO_DATA
#: Headers need no reply each: Postfix then streams them without a round trip per header.
SILENT_STEPS = NO_REPLY_HEADER

#: Which "no reply" flag silences the reply to which command.
NO_REPLY_FLAG = {
    CONNECT: NO_REPLY_CONNECT,
    HELO: NO_REPLY_HELO,
    MAIL: NO_REPLY_MAIL,
    RCPT: NO_REPLY_RCPT,
    DATA: NO_REPLY_DATA,
    UNKNOWN: NO_REPLY_UNKNOWN,
    HEADER: NO_REPLY_HEADER,
    END_OF_HEADERS: NO_REPLY_EOH,
    BODY: NO_REPLY_BODY,
}

# Macro stages (SMFIM_*), as numbered in the OPTNEG answer.
STAGE_CONNECT = 0
STAGE_HELO = 1
STAGE_MAIL = 2
STAGE_RCPT = 3
STAGE_DATA = 4
STAGE_END_OF_MESSAGE = 5
STAGE_END_OF_HEADERS = 6

#: Macros asked for: the SASL login with MAIL, the queue id with the end of headers (logs).
WANTED_MACROS = {STAGE_MAIL: "{auth_authen}", STAGE_END_OF_HEADERS: "i"}

LENGTH_BYTES = 4
DEFAULT_MAX_PACKET = 1024 * 1024  # above Postfix's default header_size_limit (102400)
MAX_REPLY_TEXT = 400  # SMTP reply lines are at most 512 octets


class ProtocolError(ValueError):
    """The bytes are not a milter conversation this filter can follow."""


@dataclass(frozen=True)
class Packet:
    command: bytes  # one byte
    data: bytes = b""


@dataclass(frozen=True)
class Options:
    """The three numbers of an OPTNEG packet."""

    version: int
    actions: int
    protocol: int


def packet_length(prefix: bytes, max_size: int = DEFAULT_MAX_PACKET) -> int:
    """The length announced by a 4-byte prefix (command byte plus data), checked."""
    if len(prefix) != LENGTH_BYTES:
        raise ProtocolError(f"a length prefix is {LENGTH_BYTES} bytes, got {len(prefix)}")
    (length,) = struct.unpack(">I", prefix)
    if length < 1:
        raise ProtocolError("empty packet (no command byte)")
    if length > max_size:
        raise ProtocolError(f"packet of {length} bytes exceeds the limit of {max_size}")
    return int(length)


def split_packet(body: bytes) -> Packet:
    """A packet from the bytes after its length prefix."""
    if not body:
        raise ProtocolError("empty packet (no command byte)")
    return Packet(body[:1], body[1:])


def encode_packet(command: bytes, data: bytes = b"") -> bytes:
    if len(command) != 1:
        raise ValueError(f"a command is one byte, got {command!r}")
    return struct.pack(">I", len(data) + 1) + command + data


class PacketDecoder:
    """Packets from a byte stream fed in pieces of any size."""

    def __init__(self, max_size: int = DEFAULT_MAX_PACKET) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not make a whole packet yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Packet]:
        """Every packet completed by `data`; ProtocolError as soon as the framing is bad."""
        self._buffer += data
        packets: list[Packet] = []
        while len(self._buffer) >= LENGTH_BYTES:
            length = packet_length(bytes(self._buffer[:LENGTH_BYTES]), self.max_size)
            end = LENGTH_BYTES + length
            if len(self._buffer) < end:
                break
            packets.append(split_packet(bytes(self._buffer[LENGTH_BYTES:end])))
            del self._buffer[:end]
        return packets


# -- decoding command data ----------------------------------------------------------------


def decode_optneg(data: bytes) -> Options:
    """Postfix sends exactly three 32-bit numbers; anything after them is ignored."""
    if len(data) < 12:
        raise ProtocolError(f"OPTNEG needs 12 bytes of data, got {len(data)}")
    version, actions, protocol = struct.unpack(">III", data[:12])
    return Options(version, actions, protocol)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="surrogateescape")


def _strings(data: bytes, what: str) -> list[str]:
    """NUL-terminated strings, all of them; the data must end with a NUL."""
    if not data:
        return []
    if not data.endswith(b"\0"):
        raise ProtocolError(f"{what}: data does not end with NUL")
    return [_text(part) for part in data[:-1].split(b"\0")]


def macro_name(name: str) -> str:
    """`{auth_authen}` and `auth_authen` are the same macro; one-letter names stay as is."""
    if len(name) > 2 and name.startswith("{") and name.endswith("}"):
        return name[1:-1]
    return name


def decode_macros(data: bytes) -> tuple[bytes, dict[str, str]]:
    """The stage (the command the macros come with) and the macros, names without braces."""
    if not data:
        raise ProtocolError("MACRO without a command byte")
    stage, rest = data[:1], data[1:]
    strings = _strings(rest, "MACRO")
    if len(strings) % 2:
        raise ProtocolError("MACRO: a name without a value")
    pairs = zip(strings[::2], strings[1::2], strict=True)
    return stage, {macro_name(name): value for name, value in pairs}


def decode_header(data: bytes) -> tuple[str, str]:
    """Name and value. Postfix sends a folded value with its line breaks, without the one
    space after the colon (unless the filter asked to keep it)."""
    strings = _strings(data, "HEADER")
    if len(strings) != 2:
        raise ProtocolError(f"HEADER needs a name and a value, got {len(strings)} strings")
    name, value = strings
    if not name:
        raise ProtocolError("HEADER with an empty name")
    return name, value


# -- building replies ---------------------------------------------------------------------


def negotiate(offered: Options) -> Options:
    """This filter's answer to the MTA's offer: never more than offered."""
    if offered.version < 2:
        raise ProtocolError(f"milter protocol version {offered.version} is not supported")
    wanted = SKIPPED_STEPS | SILENT_STEPS
    actions = ACTION_SETSYMLIST if offered.version >= 6 else 0
    return Options(
        version=min(offered.version, VERSION),
        actions=actions & offered.actions,
        protocol=wanted & offered.protocol,
    )


def encode_optneg(options: Options, macros: Mapping[int, str] | None = None) -> bytes:
    """The OPTNEG answer; `macros` (stage -> space-separated names) replace the MTA's lists
    for those stages, and only when the answer includes the SETSYMLIST action."""
    data = struct.pack(">III", options.version, options.actions, options.protocol)
    if macros and options.actions & ACTION_SETSYMLIST:
        for stage, names in sorted(macros.items()):
            data += struct.pack(">I", stage) + names.encode("ascii") + b"\0"
    return encode_packet(OPTNEG, data)


def decode_symlists(data: bytes) -> dict[int, str]:
    """The macro lists after the three numbers of an OPTNEG answer (the reverse of the
    above, for tests and diagnostics)."""
    lists: dict[int, str] = {}
    rest = data[12:]
    while rest:
        if len(rest) < 5:
            raise ProtocolError("truncated macro list")
        (stage,) = struct.unpack(">I", rest[:4])
        end = rest.find(b"\0", 4)
        if end < 0:
            raise ProtocolError("macro list does not end with NUL")
        lists[stage] = _text(rest[4:end])
        rest = rest[end + 1 :]
    return lists


CONTINUE = encode_packet(REPLY_CONTINUE)
ACCEPT = encode_packet(REPLY_ACCEPT)
TEMPFAIL = encode_packet(REPLY_TEMPFAIL)


def safe_text(text: str, limit: int = MAX_REPLY_TEXT) -> str:
    """Reply text Postfix passes on unchanged: printable ASCII on one line, each `%`
    doubled (Postfix reads `%%` as `%` and drops a lone one), at most `limit` characters."""
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in " ".join(text.split()))
    if len(printable) > limit:
        printable = printable[: limit - 3] + "..."
    return printable.replace("%", "%%")


def reply_code(code: str, status: str, text: str) -> bytes:
    """REPLYCODE: `550 5.7.1 text`; the class of `code` and `status` must agree."""
    if len(code) != 3 or not code.isdigit() or code[0] not in "45":
        raise ValueError(f"a milter reply code is 4xx or 5xx, got {code!r}")
    if status.split(".", 1)[0] != code[0]:
        raise ValueError(f"status {status!r} does not match reply code {code}")
    return encode_packet(REPLY_CODE, f"{code} {status} {safe_text(text)}".encode("ascii") + b"\0")


def iter_packets(data: Iterable[bytes], max_size: int = DEFAULT_MAX_PACKET) -> list[Packet]:
    """Every packet in a sequence of chunks (tests and tools); the stream must end cleanly."""
    decoder = PacketDecoder(max_size)
    packets = [packet for chunk in data for packet in decoder.feed(chunk)]
    if decoder.pending:
        raise ProtocolError(f"{decoder.pending} bytes after the last whole packet")
    return packets
