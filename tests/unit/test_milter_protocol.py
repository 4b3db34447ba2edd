"""The milter codec: framing (whole, split, oversized, garbage), the packets the sender
milter decodes, and the replies it builds. Pure: no sockets."""

from __future__ import annotations

import struct

import pytest

from mailstack.milter import protocol
from mailstack.milter.protocol import Options, Packet, PacketDecoder, ProtocolError

# What Postfix 3.x offers with milter_protocol = 6: every action and every protocol step.
POSTFIX_ACTIONS = 0x1FF
POSTFIX_STEPS = 0x1FFFFF


def optneg(version: int = 6, actions: int = POSTFIX_ACTIONS, steps: int = POSTFIX_STEPS) -> bytes:
    return protocol.encode_packet(b"O", struct.pack(">III", version, actions, steps))


def test_encode_packet_is_length_command_data() -> None:
    assert protocol.encode_packet(b"c") == b"\x00\x00\x00\x01c"
    assert protocol.encode_packet(b"L", b"From\0a@b\0") == b"\x00\x00\x00\x0aLFrom\0a@b\0"
    with pytest.raises(ValueError):
        protocol.encode_packet(b"cc")


def test_decoder_returns_whole_packets_in_order() -> None:
    stream = optneg() + protocol.encode_packet(b"D", b"M{auth_authen}\0alice\0")
    stream += protocol.encode_packet(b"N")
    packets = PacketDecoder().feed(stream)
    assert [p.command for p in packets] == [b"O", b"D", b"N"]
    assert packets[2] == Packet(b"N", b"")


def test_decoder_reassembles_packets_split_anywhere() -> None:
    stream = optneg() + protocol.encode_packet(b"L", b"From\0Alice <alice@a.example>\0")
    whole = PacketDecoder().feed(stream)
    for cut in range(1, len(stream)):
        decoder = PacketDecoder()
        first = decoder.feed(stream[:cut])
        assert decoder.pending == cut - sum(4 + 1 + len(p.data) for p in first)
        assert first + decoder.feed(stream[cut:]) == whole
    byte_by_byte = PacketDecoder()
    assert [p for b in stream for p in byte_by_byte.feed(bytes([b]))] == whole
    assert byte_by_byte.pending == 0


def test_oversized_packet_is_refused_from_its_length_alone() -> None:
    decoder = PacketDecoder(max_size=100)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decoder.feed(struct.pack(">I", 101))  # no need to wait for the 101 bytes
    assert PacketDecoder(max_size=100).feed(protocol.encode_packet(b"L", b"x" * 99))
    with pytest.raises(ProtocolError):
        protocol.packet_length(b"\xff\xff\xff\xff")


def test_garbage_framing_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="empty packet"):
        PacketDecoder().feed(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError):  # an HTTP request read as a length is absurd
        PacketDecoder().feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProtocolError):
        protocol.packet_length(b"\x00\x01")
    with pytest.raises(ProtocolError, match="after the last whole packet"):
        protocol.iter_packets([protocol.encode_packet(b"N"), b"\x00\x00"])


def test_decode_optneg() -> None:
    (packet,) = PacketDecoder().feed(optneg(6, 0x1FF, 0x1FFFFF))
    assert protocol.decode_optneg(packet.data) == Options(6, 0x1FF, 0x1FFFFF)
    with pytest.raises(ProtocolError):
        protocol.decode_optneg(b"\x00\x00\x00\x06")


def test_negotiation_skips_unused_steps_and_keeps_mail_headers_eoh() -> None:
    answer = protocol.negotiate(Options(6, POSTFIX_ACTIONS, POSTFIX_STEPS))
    assert answer.version == 6
    assert answer.actions == protocol.ACTION_SETSYMLIST
    for skipped in ("NO_CONNECT", "NO_HELO", "NO_RCPT", "NO_BODY", "NO_UNKNOWN", "NO_DATA"):
        assert answer.protocol & getattr(protocol, skipped), skipped
    for kept in ("NO_MAIL", "NO_HEADERS", "NO_EOH", "NO_REPLY_MAIL", "NO_REPLY_EOH"):
        assert not answer.protocol & getattr(protocol, kept), kept
    assert answer.protocol & protocol.NO_REPLY_HEADER


def test_negotiation_never_asks_for_more_than_offered() -> None:
    """An MTA with an older protocol or fewer options gets a subset of what it offered."""
    answer = protocol.negotiate(Options(4, 0x3F, 0x3FF & ~protocol.NO_REPLY_HEADER))
    assert answer.version == 4
    assert answer.actions == 0
    assert answer.protocol & ~(0x3FF & ~protocol.NO_REPLY_HEADER) == 0
    assert protocol.negotiate(Options(7, 0, 0)) == Options(6, 0, 0)
    with pytest.raises(ProtocolError):
        protocol.negotiate(Options(1, 0, 0))


def test_optneg_answer_carries_the_macro_lists() -> None:
    answer = protocol.negotiate(Options(6, POSTFIX_ACTIONS, POSTFIX_STEPS))
    (packet,) = PacketDecoder().feed(protocol.encode_optneg(answer, protocol.WANTED_MACROS))
    assert packet.command == b"O"
    assert protocol.decode_optneg(packet.data) == answer
    assert protocol.decode_symlists(packet.data) == {
        protocol.STAGE_MAIL: "{auth_authen}",
        protocol.STAGE_END_OF_HEADERS: "i",
    }
    # without SETSYMLIST the lists are left out (the MTA would not read them)
    plain = protocol.encode_optneg(Options(6, 0, 0), protocol.WANTED_MACROS)
    assert len(plain) == 4 + 1 + 12


def test_decode_macros() -> None:
    stage, macros = protocol.decode_macros(b"M{auth_authen}\0alice@a.example\0i\0ABC123\0")
    assert stage == b"M"
    assert macros == {"auth_authen": "alice@a.example", "i": "ABC123"}
    assert protocol.decode_macros(b"C") == (b"C", {})
    assert protocol.decode_macros(b"M{auth_authen}\0\0") == (b"M", {"auth_authen": ""})
    for bad in (b"", b"M{auth_authen}\0", b"M{auth_authen}\0alice"):
        with pytest.raises(ProtocolError):
            protocol.decode_macros(bad)


def test_decode_header() -> None:
    assert protocol.decode_header(b"From\0Alice <alice@a.example>\0") == (
        "From",
        "Alice <alice@a.example>",
    )
    _, value = protocol.decode_header(b"From\0a@a.example,\n\tb@a.example\0")
    assert value == "a@a.example,\n\tb@a.example"
    # 8-bit bytes survive decoding (and are refused later, as not an address)
    assert protocol.decode_header(b"From\0\xff@x\0")[1].encode(errors="surrogateescape") == (
        b"\xff@x"
    )
    for bad in (b"From\0value", b"From\0", b"\0value\0", b"From\0a\0b\0"):
        with pytest.raises(ProtocolError):
            protocol.decode_header(bad)


def test_simple_replies() -> None:
    assert protocol.CONTINUE == b"\x00\x00\x00\x01c"
    assert protocol.ACCEPT == b"\x00\x00\x00\x01a"
    assert protocol.TEMPFAIL == b"\x00\x00\x00\x01t"


def test_reply_code_is_one_clean_line() -> None:
    (packet,) = PacketDecoder().feed(protocol.reply_code("550", "5.7.1", "not yours"))
    assert packet == Packet(b"y", b"550 5.7.1 not yours\0")
    (packet,) = PacketDecoder().feed(
        protocol.reply_code("550", "5.7.1", "100% <é>\r\n\tforged\x00")
    )
    assert packet.data == b"550 5.7.1 100%% <?> forged?\0"
    long = protocol.reply_code("451", "4.3.0", "x" * 5000)
    assert len(long) < 4 + 1 + 20 + protocol.MAX_REPLY_TEXT
    with pytest.raises(ValueError):
        protocol.reply_code("250", "2.0.0", "ok")
    with pytest.raises(ValueError):
        protocol.reply_code("550", "4.7.1", "class mismatch")
