"""Property-based fuzzing of the Postfix policy delegation codec (mailstack.policy.protocol):
any input raises only ProtocolError, never holds more than one line and one request within
the limits, and requests come back as sent however the stream is cut.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.policy import protocol as policy
from tests.security.fuzzing import FEW, FUZZ, cuts, split

policy_pieces = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"\n", b"\r\n", b"=", b"request=smtpd_access_policy\n", b"sender=a@b\n", b"\xff=\n"]
    ),
    st.integers(min_value=1, max_value=300).map(lambda n: b"v" * n),
)
small_limits = st.fixed_dictionaries(
    {
        "max_line": st.integers(min_value=1, max_value=80),
        "max_attributes": st.integers(min_value=1, max_value=6),
        "max_request": st.integers(min_value=1, max_value=300),
    }
)


@FUZZ
@given(pieces=st.lists(policy_pieces, max_size=12), limits=small_limits)
def test_policy_decoder_raises_only_protocol_error_and_stays_bounded(
    pieces: list[bytes], limits: dict[str, int]
) -> None:
    decoder = policy.RequestDecoder(**limits)
    try:
        for piece in pieces:
            for request in decoder.feed(piece):
                assert request
                assert len(request) <= limits["max_attributes"]
            held = len(decoder._buffer)
            assert held <= limits["max_line"] + 1
            assert decoder._used + held <= limits["max_request"]
    except policy.ProtocolError:
        pass


attribute_names = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="="),
    min_size=1,
    max_size=12,
)
attribute_values = st.text(
    st.characters(exclude_characters="\n", codec="utf-8"), max_size=30
).filter(lambda v: not v.endswith("\r"))
requests = st.dictionaries(attribute_names, attribute_values, min_size=1, max_size=8)


@FUZZ
@given(batch=st.lists(requests, min_size=1, max_size=4), cut_at=cuts)
def test_policy_requests_decode_from_any_split(
    batch: list[dict[str, str]], cut_at: list[int]
) -> None:
    stream = b"".join(
        b"".join(f"{name}={value}\n".encode() for name, value in request.items()) + b"\n"
        for request in batch
    )
    decoder = policy.RequestDecoder()
    decoded = [r for piece in split(stream, cut_at) for r in decoder.feed(piece)]
    assert decoded == batch
    assert not decoder.pending


@FUZZ
@given(action=st.text(max_size=60))
def test_policy_reply_is_one_attribute_or_refused(action: str) -> None:
    try:
        reply = policy.encode_reply(action)
    except ValueError:
        assert "\n" in action or "\r" in action
        return
    assert policy.RequestDecoder().feed(reply) == [{"action": action}]


@FEW
@given(extra=st.integers(min_value=2, max_value=5000))
def test_policy_line_over_the_limit_is_refused_before_it_ends(extra: int) -> None:
    with pytest.raises(policy.ProtocolError):
        policy.RequestDecoder().feed(b"sender=" + b"x" * (policy.MAX_LINE + extra))
    decoder = policy.RequestDecoder()
    line = b"a=" + b"x" * 1000 + b"\n"
    many = line * (policy.MAX_REQUEST // len(line) + 2)  # one request over the limit
    with pytest.raises(policy.ProtocolError):
        decoder.feed(many)
