"""The policy delegation codec: requests whole, split anywhere and pipelined; every bound;
garbage refused; the reply's framing. Pure: no sockets."""

from __future__ import annotations

import pytest

from mailstack.policy.protocol import (
    MAX_ATTRIBUTES,
    MAX_LINE,
    ProtocolError,
    RequestDecoder,
    encode_reply,
)

# What Postfix 3.7 sends at RCPT (SMTPD_POLICY_README's attribute list), values made up.
POSTFIX_REQUEST = (
    b"request=smtpd_access_policy\n"
    b"protocol_state=RCPT\n"
    b"protocol_name=ESMTP\n"
    b"client_address=192.0.2.7\n"
    b"client_name=mx.remote.test\n"
    b"client_port=40000\n"
    b"reverse_client_name=mx.remote.test\n"
    b"server_address=127.0.0.1\n"
    b"server_port=25\n"
    b"helo_name=mx.remote.test\n"
    b"sender=bob@remote.test\n"
    b"recipient=alice@hosted.test\n"
    b"recipient_count=0\n"
    b"queue_id=\n"
    b"instance=1a2b.5f3c1d2e.0\n"
    b"size=0\n"
    b"etrn_domain=\n"
    b"stress=\n"
    b"sasl_method=\n"
    b"sasl_username=\n"
    b"sasl_sender=\n"
    b"ccert_subject=\n"
    b"ccert_issuer=\n"
    b"ccert_fingerprint=\n"
    b"ccert_pubkey_fingerprint=\n"
    b"encryption_protocol=\n"
    b"encryption_cipher=\n"
    b"encryption_keysize=0\n"
    b"policy_context=\n"
    b"compatibility_level=3.6\n"
    b"mail_version=3.7.11\n"
    b"\n"
)


def test_a_postfix_request_is_decoded() -> None:
    decoder = RequestDecoder()
    (request,) = decoder.feed(POSTFIX_REQUEST)
    assert request["request"] == "smtpd_access_policy"
    assert request["client_address"] == "192.0.2.7"
    assert request["recipient"] == "alice@hosted.test"
    assert request["sasl_username"] == ""
    assert request["mail_version"] == "3.7.11"  # unknown attributes are kept
    assert len(request) == 31
    assert not decoder.pending


def test_requests_split_anywhere_decode_the_same() -> None:
    stream = POSTFIX_REQUEST + b"request=smtpd_access_policy\nsender=\n\n"
    whole = RequestDecoder().feed(stream)
    assert len(whole) == 2
    assert whole[1] == {"request": "smtpd_access_policy", "sender": ""}
    for cut in range(1, len(stream)):
        decoder = RequestDecoder()
        first = decoder.feed(stream[:cut])
        assert decoder.pending == (cut not in (len(POSTFIX_REQUEST), len(stream)))
        assert first + decoder.feed(stream[cut:]) == whole
    byte_by_byte = RequestDecoder()
    assert [r for b in stream for r in byte_by_byte.feed(bytes([b]))] == whole


def test_values_keep_everything_after_the_first_equals_sign() -> None:
    (request,) = RequestDecoder().feed(
        b"sender=prvs=0123456789=bob@remote.test\r\nccert_subject=CN=a=b\nempty=\n\n"
    )
    assert request == {
        "sender": "prvs=0123456789=bob@remote.test",  # a trailing \r is dropped
        "ccert_subject": "CN=a=b",
        "empty": "",
    }


def test_utf8_values_are_decoded_and_stray_bytes_replaced() -> None:
    (request,) = RequestDecoder().feed("recipient=jörg@hosted.test\n".encode() + b"x=\xff\n\n")
    assert request["recipient"] == "jörg@hosted.test"
    assert request["x"] == "\ufffd"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"garbage\n", "not a name=value line"),
        (b"=value\n", "not a name=value line"),
        (b"\n", "empty request"),
        (b"request=x\n\n\n", "empty request"),
        ("nåme=x\n".encode(), "not ASCII"),
        (b"two words=x\n", "bad attribute name"),
    ],
)
def test_garbage_is_a_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        RequestDecoder().feed(data)


def test_requests_before_a_fault_are_handed_over_with_the_error() -> None:
    good = b"request=smtpd_access_policy\nsender=\n\n"
    with pytest.raises(ProtocolError) as refused:
        RequestDecoder().feed(good + good + b"garbage\n" + good)
    assert refused.value.requests == [{"request": "smtpd_access_policy", "sender": ""}] * 2
    with pytest.raises(ProtocolError) as refused:
        RequestDecoder().feed(b"garbage\n")
    assert refused.value.requests == []


def test_a_long_line_is_refused_before_it_ends() -> None:
    decoder = RequestDecoder()
    decoder.feed(b"sender=" + b"a" * (MAX_LINE - 7))  # exactly MAX_LINE: still fine
    with pytest.raises(ProtocolError, match="line longer"):
        decoder.feed(b"aa")  # no newline needed to know
    (request,) = RequestDecoder().feed(b"x=" + b"a" * (MAX_LINE - 2) + b"\r\n\n")
    assert len(request["x"]) == MAX_LINE - 2
    with pytest.raises(ProtocolError, match="line longer"):
        RequestDecoder(max_line=10).feed(b"x=0123456789\n")


def test_attribute_count_and_request_size_are_bounded() -> None:
    many = b"".join(b"a%d=1\n" % i for i in range(MAX_ATTRIBUTES))
    assert len(RequestDecoder().feed(many + b"\n")[0]) == MAX_ATTRIBUTES
    assert RequestDecoder().feed(many + b"a0=again\n\n")[0]["a0"] == "again"  # same name
    with pytest.raises(ProtocolError, match="more than"):
        RequestDecoder().feed(many + b"one_more=1\n")
    decoder = RequestDecoder(max_request=100)
    decoder.feed(b"a=" + b"x" * 60 + b"\n")
    with pytest.raises(ProtocolError, match="request longer"):
        decoder.feed(b"b=" + b"x" * 40)  # refused before its newline too
    # the bound is per request: many small requests in a row are fine
    small = RequestDecoder(max_request=100)
    for _ in range(10):
        assert small.feed(b"a=" + b"x" * 60 + b"\n\n")


def test_reply_is_one_action_line_and_an_empty_line() -> None:
    assert encode_reply("DUNNO") == b"action=DUNNO\n\n"
    text = "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds"
    assert encode_reply(text) == f"action={text}\n\n".encode()
    for bad in ("DUNNO\n", "DUNNO\r\naction=OK"):
        with pytest.raises(ValueError, match="one line"):
            encode_reply(bad)
