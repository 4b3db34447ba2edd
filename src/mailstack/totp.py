"""RFC 6238 time-based one-time codes (TOTP), the web UI's optional second factor.

pyotp computes the codes (SHA-1, 6 digits, 30-second steps: what every authenticator app
reads from an otpauth:// URI). Which time step a code belongs to is decided here, so the
caller can store the step and refuse the same code, or an older one, a second time.
"""

from __future__ import annotations

import hmac

import pyotp

STEP = 30  # seconds
DIGITS = 6
DRIFT = 1  # steps accepted either side of now: a clock off by up to 30 s still works
ISSUER = "mailstack"


def new_secret() -> str:
    """160 random bits in base32, RFC 4226's recommended key length."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, address: str, issuer: str = ISSUER) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).provisioning_uri(
        name=address, issuer_name=issuer
    )


def clean_code(code: str) -> str | None:
    """The code without the spaces people type or paste; None if it is not 6 digits."""
    digits = "".join(code.split())
    if len(digits) != DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step (within DRIFT of `now`) whose code is `code`, or None."""
    digits = clean_code(code)
    if digits is None:
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP)
    current = int(now) // STEP
    for step in range(current - DRIFT, current + DRIFT + 1):
        if hmac.compare_digest(totp.generate_otp(step), digits):
            return step
    return None


def code_at(secret: str, now: float) -> str:
    """The code of the step `now` falls in (what an authenticator app shows then)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).generate_otp(int(now) // STEP)


def qr_svg(uri: str) -> str:
    """The URI as a QR code, an inline <svg> element (no image fetch, so the pages'
    Content-Security-Policy stays `default-src 'self'`)."""
    import segno  # only the enrolment page draws QR codes: not loaded by every worker

    return segno.make(uri, error="m").svg_inline(scale=4, title="TOTP secret as a QR code")
