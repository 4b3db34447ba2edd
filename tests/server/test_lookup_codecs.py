"""The pure codecs: netstrings and the Dovecot dict line format."""

from __future__ import annotations

import pytest

from mailstack.lookup import dictproto, netstring
from mailstack.lookup.dictserver import dict_unescape


def test_netstring_round_trip() -> None:
    encoded = netstring.encode(b"alias info@example.com")
    assert encoded == b"22:alias info@example.com,"
    assert netstring.decode(encoded + b"3:abc,", 100) == (b"alias info@example.com", 26)


@pytest.mark.parametrize("partial", [b"", b"1", b"12", b"5:ab", b"5:abcde"])
def test_netstring_needs_more(partial: bytes) -> None:
    """Incomplete input asks for more bytes instead of failing."""
    assert netstring.decode(partial, 100) is None


@pytest.mark.parametrize(
    "bad",
    [
        b"x",
        b"GET / HTTP/1.1\r\n",
        b"12345678901:",
        b"01:a,",
        b"-1:",
        b"3:abc;",
        b"999:",
        b" 3:abc,",
    ],
)
def test_netstring_garbage_is_detected_early(bad: bytes) -> None:
    """Garbage is reported as soon as it cannot become a netstring (or is over the limit)."""
    with pytest.raises(netstring.NetstringError):
        netstring.decode(bad, 100)


@pytest.mark.parametrize("value", ["plain", "tab\there", "line\nbreak\r", "\x01esc", "nul\x00"])
def test_dict_tab_escaping_round_trip(value: str) -> None:
    escaped = dictproto.escape(value)
    assert "\t" not in escaped
    assert "\n" not in escaped
    assert dictproto.unescape(escaped) == value


def test_dict_parse_lines() -> None:
    hello = dictproto.parse_hello(dictproto.parse_line("H3\t2\t0\t\tmailstack"))
    assert (hello.major, hello.minor, hello.user, hello.dict_name) == (3, 2, "", "mailstack")
    command = dictproto.parse_line("Lshared/passdb/a@b.example\ta@b.example")
    assert command == dictproto.Command("L", ("shared/passdb/a@b.example", "a@b.example"))
    for bad in ("", "Zjunk", "?"):
        with pytest.raises(dictproto.DictProtocolError):
            dictproto.parse_line(bad)
    with pytest.raises(dictproto.DictProtocolError, match="major version 9"):
        dictproto.parse_hello(dictproto.parse_line("H9\t0\t0\tu\td"))


def test_dict_key_unescape() -> None:
    r"""Dovecot escapes '/' in sieve script names as '\|'."""
    assert dict_unescape(r"my\|script\\x") == "my/script\\x"
