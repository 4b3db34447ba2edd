"""Property-based fuzzing of every decoder that reads bytes from a peer.

For each codec: arbitrary input raises only the codec's declared error, whatever decodes
re-encodes to the bytes it came from, and nothing is buffered past the codec's limit
(oversized input is refused as soon as it is known to be oversized, not once it is whole).
Pure code and in-memory streams: no sockets, no daemons. The policy codec has its own
module, test_fuzz_policy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailstack.lookup import dictproto, netstring
from mailstack.lookup.dictserver import DictServer
from mailstack.managesieve import wire
from mailstack.managesieve.wire import Atom, CommandError, CommandReader, FatalError, String
from mailstack.milter import protocol as milter
from mailstack.milter.server import SenderMilter
from mailstack.store.errors import StoreUnavailable
from tests.security.fuzzing import FEW, FUZZ, cuts, split


class FakeWriter:
    """What the servers use of a StreamWriter: write() and drain()."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        await asyncio.sleep(0)


class NoStore:
    """A gateway whose store is down: every call fails as a dead database does."""

    inline = False

    async def call(self, function: object, *args: object) -> object:
        raise StoreUnavailable("fuzzing: no store")


# -- netstrings (Postfix socketmap) ----------------------------------------------------------

netstring_input = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda n, body, tail: b"%d:" % n + body + tail,
        st.integers(min_value=0, max_value=300),
        st.binary(max_size=300),
        st.binary(max_size=3),
    ),
    st.builds(
        lambda digits, rest: digits.encode() + rest,
        st.text(alphabet="0123456789", max_size=14),
        st.binary(max_size=20),
    ),
)


@FUZZ
@given(
    data=netstring_input, max_length=st.integers(min_value=0, max_value=256), mutable=st.booleans()
)
def test_netstring_decode_raises_only_netstring_error(
    data: bytes, max_length: int, mutable: bool
) -> None:
    buffer = bytearray(data) if mutable else data
    try:
        decoded = netstring.decode(buffer, max_length)
    except netstring.NetstringError:
        return
    if decoded is None:  # more input is wanted only while one frame could still fit
        assert len(data) <= netstring.MAX_LENGTH_DIGITS + 1 + max_length
        return
    payload, used = decoded
    assert len(payload) <= max_length
    assert netstring.encode(payload) == data[:used]


@FUZZ
@given(payloads=st.lists(st.binary(max_size=120), max_size=6), cut_at=cuts)
def test_netstrings_decode_from_any_split_and_re_encode(
    payloads: list[bytes], cut_at: list[int]
) -> None:
    """A stream of frames arriving in arbitrary pieces (as the socketmap server reads it):
    no prefix of a valid frame is an error, and every payload comes back in order."""
    stream = b"".join(netstring.encode(p) for p in payloads)
    buffer = bytearray()
    out = []
    for piece in split(stream, cut_at):
        buffer += piece
        while (decoded := netstring.decode(buffer, 120)) is not None:
            payload, used = decoded
            del buffer[:used]
            out.append(payload)
    assert out == payloads
    assert not buffer


@FUZZ
@given(length=st.integers(min_value=1, max_value=10**10 - 1), max_length=st.integers(0, 4096))
def test_oversized_netstring_is_refused_from_its_length_alone(length: int, max_length: int) -> None:
    assume(length > max_length)
    with pytest.raises(netstring.NetstringError):
        netstring.decode(b"%d:" % length, max_length)
    with pytest.raises(netstring.NetstringError):  # a length prefix that cannot end
        netstring.decode(b"%d" % length + b"0" * 11, 10**12)


# -- Dovecot dict protocol ---------------------------------------------------------------------

field_text = st.text(st.characters(codec="utf-8"), max_size=20)
dict_lines = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda name, fields: name + "\t".join(fields),
        st.sampled_from([*"HLIBCDRSUAT", "X", "\x01", "\t", "h"]),
        st.lists(
            st.one_of(
                field_text,
                st.sampled_from(["3", "2", "0", "-1", "9" * 5000, "\x01", "\x01t", " 3 ", "٣"]),
            ),
            max_size=7,
        ),
    ),
)


@FUZZ
@given(line=dict_lines)
def test_dict_parser_raises_only_protocol_error_and_re_encodes(line: str) -> None:
    try:
        command = dictproto.parse_line(line)
    except dictproto.DictProtocolError:
        return
    assert command.name == line[0]
    again = command.name + "\t".join(dictproto.escape(arg) for arg in command.args)
    assert dictproto.parse_line(again) == command
    if command.name == dictproto.HELLO:
        try:
            hello = dictproto.parse_hello(command)
        except dictproto.DictProtocolError:
            return
        assert hello.major in dictproto.PROTOCOL_MAJORS


@FUZZ
@given(fields=st.lists(st.text(max_size=30), min_size=1, max_size=6))
def test_dict_fields_round_trip_through_tab_escaping(fields: list[str]) -> None:
    line = "\t".join(dictproto.escape(f) for f in fields)
    assert "\n" not in line
    assert dictproto.split_fields(line) == fields
    assert dictproto.parse_line("L" + line).args == tuple(fields)


@FUZZ
@given(key=st.text(max_size=40), value=st.text(max_size=40))
def test_dict_replies_are_one_line_whatever_the_value(key: str, value: str) -> None:
    """A value with newlines (a user-supplied name, say) cannot add reply lines."""
    for reply in (
        dictproto.reply_ok(value),
        dictproto.reply_fail(value),
        dictproto.reply_row(key, value),
        dictproto.reply_commit_fail(key, value),
        dictproto.reply_iter_fail(value),
    ):
        assert reply.endswith("\n")
        assert reply.count("\n") == 1


dict_streams = st.lists(
    st.one_of(
        st.binary(max_size=60),
        dict_lines.map(lambda line: line.encode("utf-8", "surrogatepass") + b"\n"),
        st.sampled_from([b"H3\t2\t0\t\tmailstack\n", b"Lshared/passdb/a@b.example\ta@b.example\n"]),
    ),
    max_size=8,
)


@FUZZ
@given(chunks=dict_streams)
def test_dict_server_answers_any_line_with_whole_reply_lines(chunks: list[bytes]) -> None:
    """The server's answer to each line of any stream (the store down, as the worst case):
    never an exception, every reply a whole line of a kind the protocol knows."""

    async def go() -> list[str]:
        server = DictServer(NoStore(), idle_timeout=5)
        hello: dictproto.Hello | None = None
        replies = []
        for line in b"".join(chunks).split(b"\n")[:-1]:
            reply, hello, keep_open = await server.respond(line, hello)
            replies.append(reply)
            if not keep_open:
                break
        return replies

    for reply in asyncio.run(go()):
        if reply:
            assert reply.endswith("\n")
            for line in reply.split("\n")[:-1]:
                assert line[:1] in ("O", "N", "F", "")


# -- ManageSieve command reader ------------------------------------------------------------------

READ_LIMIT = wire.MAX_LINE + 2  # what ManageSieveServer gives its StreamReaders
MAX_READ = 64 * 1024  # wire._DISCARD_CHUNK: literals being skipped are read in such pieces


class RecordingReader(asyncio.StreamReader):
    """A StreamReader that remembers the largest piece each read method handed out."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit=limit)
        self.largest: dict[str, int] = {"readuntil": 0, "readexactly": 0, "read": 0}

    def _note(self, method: str, data: bytes) -> bytes:
        self.largest[method] = max(self.largest[method], len(data))
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        return self._note("readuntil", await super().readuntil(separator))

    async def readexactly(self, n: int) -> bytes:
        return self._note("readexactly", await super().readexactly(n))

    async def read(self, n: int = -1) -> bytes:
        assert 0 < n <= MAX_READ, f"read({n}) would buffer without bound"
        return self._note("read", await super().read(n))


Outcome = list[wire.Token] | Exception


def read_commands(
    data: bytes, max_literal: int, discard: bool, eof: bool = True, idle: float = 5.0
) -> tuple[list[Outcome], RecordingReader]:
    """Every command in `data`, as the session loop reads them: a CommandError is answered
    and the next command read; FatalError, IdleTimeout or the end of input stop."""

    async def go() -> tuple[list[Outcome], RecordingReader]:
        reader = RecordingReader(READ_LIMIT)
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        commands = CommandReader(reader, max_literal=max_literal, idle=idle)
        commands.set_limits(max_literal, idle, discard=discard)
        outcomes: list[Outcome] = []
        for _ in range(len(data) + 2):  # every command consumes at least one byte
            try:
                outcomes.append(await commands.command())
            except CommandError as exc:
                outcomes.append(exc)
            except (FatalError, wire.IdleTimeout, asyncio.IncompleteReadError) as exc:
                outcomes.append(exc)
                return outcomes, reader
        raise AssertionError("the reader stopped consuming input")

    return asyncio.run(go())


sieve_fragments = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"\r\n",
            b"\n",
            b" ",
            b'"',
            b"\\",
            b"\x00",
            b"NOOP",
            b'AUTHENTICATE "PLAIN"',
            b'PUTSCRIPT "x" ',
            b"{5+}\r\n",
            b"{0}\r\n",
            b"{64}\r\n",
            b"{4097+}\r\n",
            b"{99999999999+}\r\n",
            b"{16777217+}\r\n",
            b"{12",
        ]
    ),
    st.integers(min_value=1, max_value=READ_LIMIT + 200).map(lambda n: b"x" * n),
)


@FUZZ
@given(
    fragments=st.lists(sieve_fragments, max_size=12),
    max_literal=st.sampled_from([16, 4096]),
    discard=st.booleans(),
)
def test_sieve_reader_raises_only_declared_errors_and_stays_bounded(
    fragments: list[bytes], max_literal: int, discard: bool
) -> None:
    outcomes, reader = read_commands(b"".join(fragments), max_literal, discard)
    assert isinstance(outcomes[-1], FatalError | asyncio.IncompleteReadError)
    assert reader.largest["readuntil"] <= READ_LIMIT + 1
    assert reader.largest["readexactly"] <= max_literal
    for outcome in outcomes:
        if isinstance(outcome, CommandError):
            assert outcome.message
        elif isinstance(outcome, list):
            literals = [t for t in outcome if isinstance(t, String) and len(t.data) > READ_LIMIT]
            assert not literals  # nothing longer than a line or a literal within the limit
            assert sum(len(t.data) for t in outcome if isinstance(t, String)) <= (
                wire.MAX_LITERALS * max_literal + (wire.MAX_LITERALS + 1) * READ_LIMIT
            )


atoms = st.from_regex(rb"[!#-'*-z|}~][!#-'*-~]{0,15}", fullmatch=True).map(
    lambda raw: Atom(raw.decode("ascii"))
)
strings = st.binary(max_size=64).map(String)
tokens = st.lists(st.one_of(atoms, strings), max_size=6).filter(
    lambda items: sum(isinstance(t, String) for t in items) <= wire.MAX_LITERALS
)


def encode_command(items: list[wire.Token], literal: list[bool]) -> bytes:
    """What a client sends: atoms bare, strings quoted when they can be, else as literals
    (`{n+}` ends the line, the octets follow, the command goes on)."""
    out = b""
    for index, token in enumerate(items):
        sep = b" " if index else b""
        if isinstance(token, Atom):
            out += sep + token.text.encode("ascii")
        elif literal[index % len(literal)] or any(c in token.data for c in b"\r\n\x00"):
            out += sep + b"{%d+}\r\n" % len(token.data) + token.data
        else:
            out += sep + b'"' + token.data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return out + b"\r\n"


@FUZZ
@given(
    commands=st.lists(tokens, min_size=1, max_size=4),
    literal=st.lists(st.booleans(), min_size=1, max_size=6),
    cut_at=cuts,
)
def test_sieve_commands_read_back_as_sent(
    commands: list[list[wire.Token]], literal: list[bool], cut_at: list[int]
) -> None:
    stream = b"".join(encode_command(items, literal) for items in commands)
    wanted = [items for items in commands if items]  # an empty line is an empty command
    outcomes, _ = read_commands(stream, 64, discard=True)
    assert isinstance(outcomes[-1], asyncio.IncompleteReadError)
    assert [o for o in outcomes[:-1] if o != []] == wanted


@FEW
@given(extra=st.integers(min_value=1, max_value=5000), junk=st.binary(min_size=1, max_size=1))
def test_sieve_line_over_the_limit_is_fatal_before_it_ends(extra: int, junk: bytes) -> None:
    """No LF in sight and more than a line's worth buffered: the connection is ended at once
    (no waiting for the rest: the input stays open and the idle timeout is long)."""
    assume(junk != b"\n")
    outcomes, _ = read_commands(junk * (READ_LIMIT + extra), 4096, True, eof=False, idle=30)
    assert isinstance(outcomes[-1], FatalError)


@FEW
@given(size=st.integers(min_value=4097, max_value=10**12 - 1))
def test_sieve_big_literal_before_login_is_fatal_without_reading_it(size: int) -> None:
    outcomes, reader = read_commands(
        b'AUTHENTICATE "PLAIN" {%d+}\r\n' % size, 4096, False, eof=False, idle=30
    )
    assert isinstance(outcomes[-1], FatalError)
    assert reader.largest["readexactly"] == 0


@FEW
@given(size=st.integers(min_value=65, max_value=3000))
def test_sieve_literal_over_the_limit_is_skipped_and_the_stream_stays_in_step(size: int) -> None:
    stream = b'PUTSCRIPT "big" {%d+}\r\n' % size + b"#" * size + b"\r\nNOOP\r\n"
    outcomes, reader = read_commands(stream, 64, True)
    refused, after, end = outcomes
    assert isinstance(refused, CommandError)
    assert refused.code == "QUOTA/MAXSIZE"
    assert after == [Atom("NOOP")]
    assert isinstance(end, asyncio.IncompleteReadError)
    assert reader.largest["readexactly"] == 0
    huge, _ = read_commands(b"PUTSCRIPT {%d+}\r\n" % (16 * 1024 * 1024 + size), 64, True, False)
    assert isinstance(huge[-1], FatalError)  # past what is worth skipping: the end


@settings(FEW, max_examples=15)
@given(half=st.sampled_from([b"NOOP", b'PUTSCRIPT "x" {10+}\r\nkeep', b'"open', b"{3+}\r\n"]))
def test_sieve_half_command_ends_in_idle_timeout(half: bytes) -> None:
    outcomes, _ = read_commands(half, 4096, False, eof=False, idle=0.02)
    assert isinstance(outcomes[-1], wire.IdleTimeout)


# -- milter packets ------------------------------------------------------------------------------

milter_commands = st.sampled_from([*b"ABCDEHKLMNOQRTUXyc\x00\xff"]).map(lambda c: bytes([c]))
valid_packets = st.builds(milter.encode_packet, milter_commands, st.binary(max_size=40))
milter_pieces = st.one_of(
    valid_packets,
    valid_packets,
    valid_packets,
    st.binary(max_size=12),
    st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: struct.pack(">I", n)),
)


def feed_all(pieces: list[bytes], max_size: int) -> tuple[list[milter.Packet], bool, int]:
    decoder = milter.PacketDecoder(max_size)
    packets: list[milter.Packet] = []
    try:
        for piece in pieces:
            packets += decoder.feed(piece)
            assert decoder.pending < milter.LENGTH_BYTES + max_size
    except milter.ProtocolError:
        return packets, True, decoder.pending
    return packets, False, decoder.pending


@FUZZ
@given(
    pieces=st.lists(milter_pieces, max_size=10),
    max_size=st.integers(min_value=1, max_value=64),
    cut_at=cuts,
)
def test_milter_decoder_raises_only_protocol_error_and_re_encodes(
    pieces: list[bytes], max_size: int, cut_at: list[int]
) -> None:
    stream = b"".join(pieces)
    packets, failed, pending = feed_all([stream], max_size)
    chunked, chunked_failed, _ = feed_all(list(split(stream, cut_at)), max_size)
    assert failed == chunked_failed  # where the stream is cut changes nothing
    if failed:
        return
    assert chunked == packets
    encoded = b"".join(milter.encode_packet(p.command, p.data) for p in packets)
    assert stream.startswith(encoded)
    assert len(stream) - len(encoded) == pending


@FUZZ
@given(data=st.binary(max_size=80))
def test_milter_command_decoders_raise_only_protocol_error(data: bytes) -> None:
    for decode in (
        milter.decode_optneg,
        milter.decode_macros,
        milter.decode_header,
        milter.decode_symlists,
    ):
        with contextlib.suppress(milter.ProtocolError):
            decode(data)


uint32 = st.integers(min_value=0, max_value=2**32 - 1)


@FUZZ
@given(offer=st.builds(milter.Options, uint32, uint32, uint32))
def test_milter_negotiation_never_asks_more_than_offered_and_round_trips(
    offer: milter.Options,
) -> None:
    try:
        answer = milter.negotiate(offer)
    except milter.ProtocolError:
        assert offer.version < 2
        return
    assert answer.version <= offer.version
    assert answer.actions & ~offer.actions == 0
    assert answer.protocol & ~offer.protocol == 0
    (packet,) = milter.PacketDecoder().feed(milter.encode_optneg(answer, milter.WANTED_MACROS))
    assert milter.decode_optneg(packet.data) == answer
    lists = milter.decode_symlists(packet.data)
    assert lists == (milter.WANTED_MACROS if answer.actions & milter.ACTION_SETSYMLIST else {})


no_nul = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=20)


@FUZZ
@given(
    stage=st.binary(min_size=1, max_size=1),
    pairs=st.lists(st.tuples(no_nul, no_nul), max_size=5),
    name=no_nul.filter(bool),
    value=no_nul,
)
def test_milter_macros_and_headers_round_trip(
    stage: bytes, pairs: list[tuple[str, str]], name: str, value: str
) -> None:
    data = stage + b"".join(n.encode() + b"\0" + v.encode() + b"\0" for n, v in pairs)
    assert milter.decode_macros(data) == (
        stage,
        {milter.macro_name(n): v for n, v in pairs},
    )
    assert milter.decode_header(name.encode() + b"\0" + value.encode() + b"\0") == (name, value)


@FUZZ
@given(text=st.text(max_size=600))
def test_milter_reply_text_is_one_printable_line(text: str) -> None:
    packet = milter.reply_code("550", "5.7.1", text)
    (decoded,) = milter.PacketDecoder().feed(packet)
    line = decoded.data[:-1].decode("ascii")
    assert decoded.data.endswith(b"\0")
    assert all(" " <= ch <= "~" for ch in line)
    assert "%" not in line.replace("%%", "")  # Postfix reads a lone % as a format
    assert len(line.replace("%%", "%")) <= len("550 5.7.1 ") + milter.MAX_REPLY_TEXT


def optneg(version: int = 6) -> bytes:
    return milter.encode_packet(b"O", struct.pack(">III", version, 0x1FF, 0x1FFFFF))


milter_sessions = st.lists(
    st.one_of(
        valid_packets,
        st.sampled_from(
            [
                optneg(),
                optneg(1),
                milter.encode_packet(b"D", b"M{auth_authen}\0alice@example.com\0"),
                milter.encode_packet(b"L", b"From\0x@example.com\0"),
                milter.encode_packet(b"M", b"<x@example.com>\0"),
                milter.encode_packet(b"N"),
                milter.encode_packet(b"A"),
                milter.encode_packet(b"K"),
            ]
        ),
        st.binary(max_size=6),
    ),
    max_size=10,
)


@FUZZ
@given(pieces=milter_sessions)
def test_sender_milter_session_survives_any_packet_stream(pieces: list[bytes]) -> None:
    """The milter's read loop on the codec: it ends by returning (QUIT, garbage, closed
    between packets) or with the end of input inside a packet, never with anything else;
    replies are whole packets."""

    async def go() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(b"".join(pieces))
        reader.feed_eof()
        writer = FakeWriter()
        server = SenderMilter(NoStore(), idle_timeout=5, packet_timeout=5, max_packet=4096)
        # the end of input inside a packet: the listener closes the connection
        with contextlib.suppress(asyncio.IncompleteReadError):
            await server.handle(reader, writer)
        return bytes(writer.data)

    milter.iter_packets([asyncio.run(go())])  # whole packets only, or ProtocolError
