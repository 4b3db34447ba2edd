"""Why an XOAUTH2 relay attempt could not go ahead.

    MailstackError
     └── XOAuth2Error              message is safe to log: never a token or secret
          ├── TokenFileError        the token file is missing, unreadable or malformed
          └── TokenRefreshError     the token endpoint refused the refresh (revoked, bad client)
               └── TokenEndpointUnavailable   unreachable, timed out, or answered 5xx/429

Each one ends in a 4xx reply to Postfix: the operator fixes the cause and the queue drains.
The hierarchy lets the hop choose the reply text without parsing messages.
"""

from __future__ import annotations

from mailstack.errors import MailstackError


class XOAuth2Error(MailstackError):
    """Base of the XOAUTH2 errors; str() is a log-safe explanation."""


class TokenFileError(XOAuth2Error):
    """The token file cannot be used; someone has to create or repair it."""


class TokenRefreshError(XOAuth2Error):
    """The token endpoint answered, and said no (e.g. invalid_grant for a revoked token)."""


class TokenEndpointUnavailable(TokenRefreshError):
    """The token endpoint could not be asked; trying again later may work."""
