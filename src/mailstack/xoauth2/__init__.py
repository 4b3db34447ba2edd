"""XOAUTH2 authentication to the relay host (Gmail, Microsoft 365), done in Python.

Why a hop: Postfix keeps owning the queue, retries and bounces, but its SASL client cannot
do OAuth2 without a C plugin (sasl-xoauth2) that must be built for every distribution and
logs poorly. So Postfix relays to a small SMTP hop on loopback (`relayhost =
[127.0.0.1]:10587`, no SASL, no TLS on that hop), and the hop carries each transaction
on to the real relay host:

    postfix smtp  --SMTP-->  hop (aiosmtpd, 127.0.0.1)  --STARTTLS/TLS + AUTH XOAUTH2-->  relay

- The hop answers every command only after the relay host did: MAIL gets the relay's MAIL
  reply, each RCPT the relay's reply for that recipient (a 550 for one recipient reaches
  Postfix for that recipient only), DATA the relay's final reply. It stores nothing, so it
  never accepts what the relay host has not.
- Token trouble (revoked refresh token, endpoint down, upstream refusing the token) and
  network trouble are answered with 4xx (454 4.7.0, 451 4.4.x): Postfix defers and retries,
  never bounces. Each failure is one log line, with no token or secret in it; with
  XOAUTH2_FULL_TRACE the redacted upstream conversation follows it.
- Tokens live in `<queue>/xoauth2-tokens/<username>` (sasl-xoauth2's JSON layout), are
  refreshed with the OAuth2 refresh_token grant before they expire, one refresh shared by
  concurrent deliveries, and saved atomically (mode 0600), rotated refresh tokens included.

Modules: `config` (HopConfig, from settings), `tokens` (the file), `refresh` (endpoint and
TokenManager), `upstream` (one authenticated relay connection), `hop` (the SMTP server and
its controller), `replies` (the 4xx texts), `trace` (redaction), `errors`.
"""

from mailstack.xoauth2.config import (
    DEFAULT_HOP_PORT,
    GOOGLE_TOKEN_ENDPOINT,
    MICROSOFT_SCOPE,
    HopConfig,
    InitialTokens,
    config_from_settings,
)
from mailstack.xoauth2.errors import (
    TokenEndpointUnavailable,
    TokenFileError,
    TokenRefreshError,
    XOAuth2Error,
)
from mailstack.xoauth2.hop import XOAuth2Hop
from mailstack.xoauth2.tokens import Tokens, TokenStore, token_file_path

__all__ = [
    "DEFAULT_HOP_PORT",
    "GOOGLE_TOKEN_ENDPOINT",
    "MICROSOFT_SCOPE",
    "HopConfig",
    "InitialTokens",
    "TokenEndpointUnavailable",
    "TokenFileError",
    "TokenRefreshError",
    "TokenStore",
    "Tokens",
    "XOAuth2Error",
    "XOAuth2Hop",
    "config_from_settings",
    "token_file_path",
]
