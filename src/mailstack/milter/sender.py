"""Who may put which address in `From:`: the sender milter's policy, as a pure function.

OpenDKIM signs by the domain of the `From:` header, while Postfix checks only the envelope
sender against the SASL login. Without this check any user could send `From:` another
hosted domain and have it signed for that domain. A message passes when every address in
every `From:` header is one the authenticated user may send as, by the same rule Postfix
applies to the envelope (`Resolver.sender_logins`: the mailbox itself and the users an
alias, catch-all or alias domain delivers to).

Parsing is deliberately strict, because OpenDKIM parses `From:` with its own code: a header
this module might read differently (group syntax, route addresses, unbalanced quotes or
comments, an `@` that belongs to no parsed address) is refused rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses

from mailstack.names import try_address

MAX_FROM_HEADERS = 64  # RFC 5322 allows exactly one; more than this is refused unread
MAX_FROM_LENGTH = 8192  # characters in one From: value
MAX_ADDRESSES = 32  # addresses looked up per message (each lookup may follow aliases)


@dataclass(frozen=True)
class Verdict:
    """`accepted`, or refused with a `reason` fit for the SMTP reply and the log."""

    accepted: bool
    reason: str
    addresses: tuple[str, ...] = field(default=())

    @classmethod
    def accept(cls, reason: str, addresses: tuple[str, ...] = ()) -> Verdict:
        return cls(True, reason, addresses)

    @classmethod
    def refuse(cls, reason: str, addresses: tuple[str, ...] = ()) -> Verdict:
        return cls(False, reason, addresses)


class UnparsableFrom(ValueError):
    """A From: value that cannot be read unambiguously."""


def unfold(value: str) -> str:
    """A folded header value on one line (Postfix sends the line breaks as they came)."""
    return " ".join(value.replace("\r\n", "\n").split("\n"))


def structure(value: str) -> str:
    """`value` without its quoted strings and (nested) comments; UnparsableFrom when a
    quote or comment is not closed or a comment closes that never opened."""
    out: list[str] = []
    depth = 0
    quoted = False
    chars = iter(value)
    for ch in chars:
        if ch == "\\" and (quoted or depth):
            next(chars, None)  # a quoted-pair: the next character is literal
        elif quoted:
            quoted = ch != '"'
        elif depth:
            depth += {"(": 1, ")": -1}.get(ch, 0)
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth = 1
        elif ch == ")":
            raise UnparsableFrom("unbalanced ')'")
        else:
            out.append(ch)
    if quoted or depth:
        raise UnparsableFrom("unterminated quoted string or comment")
    return "".join(out)


def from_addresses(value: str) -> list[str]:
    """The canonical addresses of one From: value; UnparsableFrom for anything else."""
    text = unfold(value)
    if not text.strip():
        raise UnparsableFrom("empty")
    bare = structure(text)
    if ":" in bare:
        raise UnparsableFrom("group or route syntax")
    # `ceo@b.example <me@a.example>`: Python versions disagree on what that is (3.11.2 reads
    # one mailbox, later ones two), so an `@` beside an angle-bracketed address is refused
    # before asking them
    for mailbox in bare.split(","):
        if "<" in mailbox and "@" in re.sub(r"<[^>]*>", "", mailbox):
            raise UnparsableFrom("text besides the addresses contains '@'")
    parsed = getaddresses([text])
    addresses: list[str] = []
    for _, raw in parsed:
        if not raw:  # what getaddresses returns for a list it cannot read
            raise UnparsableFrom("not a list of mailboxes")
        canonical = try_address(raw)
        if canonical is None:
            raise UnparsableFrom(f"not an address: {raw!r}")
        addresses.append(canonical)
    if not addresses:
        raise UnparsableFrom("no address")
    # Every mailbox has exactly one `@` outside quotes and comments: more means text this
    # parser did not take as an address (`ceo@b.example <me@a.example>`), which another
    # parser might.
    if bare.count("@") != len(addresses):
        raise UnparsableFrom("text besides the addresses contains '@'")
    return addresses


def canonical_login(login: str) -> str:
    return try_address(login) or login.strip().lower()


def check_from(
    login: str | None,
    from_header_values: Sequence[str],
    owners_of: Callable[[str], list[str]],
) -> Verdict:
    """May `login` send a message with these `From:` values?

    `login` is the SASL user ({auth_authen}); None means the client did not authenticate,
    and the message is accepted: this milter only judges authenticated submissions. It is
    meant for the submission listeners, where Postfix admits no one unauthenticated, and
    where it is not, other rules (the MX's hosted-sender check) apply.

    `owners_of(address)` returns the logins allowed to send as a canonical address
    (`Resolver.sender_logins`); whatever it raises (StoreUnavailable) propagates, so the
    caller can defer the message instead of deciding without the store.
    """
    if login is None or not login.strip():
        return Verdict.accept("not authenticated: not checked")
    user = canonical_login(login)
    if not from_header_values:
        return Verdict.refuse("Message has no From: header (RFC 5322 requires one)")
    if len(from_header_values) > MAX_FROM_HEADERS:
        return Verdict.refuse(f"Message has more than {MAX_FROM_HEADERS} From: headers")
    addresses: list[str] = []
    for value in from_header_values:
        if len(value) > MAX_FROM_LENGTH:
            return Verdict.refuse(f"From: header longer than {MAX_FROM_LENGTH} characters")
        try:
            found = from_addresses(value)
        except UnparsableFrom as exc:
            return Verdict.refuse(f"From: header cannot be parsed ({exc}); use name <address>")
        for address in found:
            if address not in addresses:
                addresses.append(address)
    if len(addresses) > MAX_ADDRESSES:
        return Verdict.refuse(f"From: header names more than {MAX_ADDRESSES} addresses")
    for address in addresses:
        if user not in owners_of(address):
            return Verdict.refuse(
                f"From: address <{address}> not owned by user {user}", tuple(addresses)
            )
    return Verdict.accept("From: addresses owned by the user", tuple(addresses))
