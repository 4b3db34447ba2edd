"""Pure parts of app passwords and TOTP: the password format and its ident, and which time
step a code belongs to (RFC 6238's test key, codes computed by pyotp as an app would)."""

from __future__ import annotations

import base64
import re

import pyotp
import pytest

from mailstack import totp
from mailstack.store import InvalidInput, apppasswords

# RFC 6238 appendix B: the SHA-1 key "12345678901234567890"; at 59 s the 8-digit code is
# 94287082, so the 6-digit one is 287082
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


def test_rfc_6238_vector() -> None:
    """Our code at 59 s is the RFC's, and it belongs to step 1."""
    assert totp.code_at(RFC_SECRET, 59) == "287082"
    assert totp.matching_step(RFC_SECRET, "287082", 59) == 1


def test_a_code_is_accepted_one_step_either_side_and_no_further() -> None:
    secret = totp.new_secret()
    now = 1_800_000_015.0
    step = int(now) // totp.STEP
    app = pyotp.TOTP(secret)
    assert totp.matching_step(secret, app.at(now), now) == step
    assert totp.matching_step(secret, app.at(now - 30), now) == step - 1
    assert totp.matching_step(secret, app.at(now + 30), now) == step + 1
    assert totp.matching_step(secret, app.at(now - 60), now) is None
    assert totp.matching_step(secret, app.at(now + 60), now) is None


@pytest.mark.parametrize("typed", ["12345", "1234567", "12345a", "١٢٣٤٥٦", "", "      "])
def test_codes_that_are_not_six_ascii_digits_match_nothing(typed: str) -> None:
    assert totp.clean_code(typed) is None
    assert totp.matching_step(RFC_SECRET, typed, 59) is None


def test_spaces_people_type_are_dropped() -> None:
    assert totp.clean_code(" 287 082 ") == "287082"
    assert totp.matching_step(RFC_SECRET, "287 082", 59) == 1


def test_secret_uri_and_qr_code() -> None:
    secret = totp.new_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)  # 160 bits
    uri = totp.provisioning_uri(secret, "ann@example.com")
    assert uri.startswith("otpauth://totp/mailstack:ann%40example.com?")
    assert f"secret={secret}" in uri
    svg = totp.qr_svg(uri)
    assert svg.startswith("<svg")
    assert "<script" not in svg
    assert "href" not in svg


def test_app_passwords_are_random_base32_with_an_ident() -> None:
    made = {apppasswords.new_app_password() for _ in range(200)}
    assert len(made) == 200
    for password in made:
        assert apppasswords.looks_like_app_password(password)
        assert len(password) == apppasswords.LENGTH == 28
        assert apppasswords.is_ident(apppasswords.ident_of(password))


@pytest.mark.parametrize("ident", ["abcdefg", "abcdefghi", "ABCDEFGH", "abcd0fgh", "ab/defgh"])
def test_what_is_not_an_ident(ident: str) -> None:
    """The lookup service answers only well-formed idents (the passdb key carries whatever
    the client typed first)."""
    assert not apppasswords.is_ident(ident)


@pytest.mark.parametrize("name", ["", "my phone", "-x", "a" * 65, "ph/one"])
def test_bad_app_password_names_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(InvalidInput, match="name"):
        apppasswords.validate_name(name)
