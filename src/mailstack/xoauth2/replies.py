"""SMTP replies the hop gives Postfix, and the rule that every failure of ours is a 4xx.

Postfix defers on 4xx and bounces on 5xx. A token or network problem is never the
message's fault, so it must never bounce mail: those replies live here, all 4xx, with a
text that tells the operator where to look (Postfix copies it into its own log line).
"""

from __future__ import annotations

from dataclasses import dataclass

_MAX_TEXT = 400


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: a code and its text (lines separated by newlines)."""

    code: int
    text: str

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    def wire(self) -> str:
        """The reply as aiosmtpd pushes it: continuation lines get `code-`."""
        lines = [_clean(line) for line in self.text.splitlines()] or [""]
        head = [f"{self.code}-{line}" for line in lines[:-1]]
        return "\r\n".join([*head, f"{self.code} {lines[-1]}".rstrip()])


def _clean(line: str) -> str:
    """Keep a peer's text printable and short, so it cannot break our framing."""
    text = "".join(ch if ch.isprintable() else " " for ch in line)
    return text[:_MAX_TEXT]


class Deferral(Exception):
    """Stop this command and answer Postfix with a 4xx; `reason` is for the log line."""

    def __init__(self, reply: Reply, reason: str) -> None:
        if not 400 <= reply.code < 500:
            raise ValueError(f"a deferral must be a 4xx reply, got {reply.code}")
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


TOKEN_FILE_UNUSABLE = Reply(454, "4.7.0 XOAUTH2 token file unusable, see the mailstack log")
TOKEN_REFRESH_REFUSED = Reply(454, "4.7.0 XOAUTH2 token refresh refused, see the mailstack log")
TOKEN_ENDPOINT_DOWN = Reply(451, "4.4.1 XOAUTH2 token endpoint unavailable, will retry")
AUTH_REJECTED = Reply(454, "4.7.0 relay host rejected XOAUTH2 authentication")
RELAY_UNREACHABLE = Reply(451, "4.4.1 relay host unreachable, will retry")
RELAY_TLS_FAILED = Reply(454, "4.7.5 TLS to the relay host failed, will retry")
RELAY_LOST = Reply(451, "4.4.2 connection to the relay host lost, will retry")
INTERNAL_ERROR = Reply(451, "4.3.0 internal error in the XOAUTH2 hop, will retry")
NO_TRANSACTION = Reply(451, "4.3.0 no relay transaction open, start again with MAIL")
