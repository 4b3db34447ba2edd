"""Postfix socketmap tables: map name + key -> `OK`/`NOTFOUND` answer.

Configure Postfix with one socketmap per table, for example
`virtual_mailbox_domains = socketmap:unix:/run/mailstack/lookup.sock:maildomain`.

| map           | Postfix parameter          | key             | OK value                     |
|---------------|----------------------------|-----------------|------------------------------|
| `maildomain`  | virtual_mailbox_domains    | domain          | the domain (hosted or alias) |
| `domain`      | —                          | domain          | the domain (hosted only)     |
| `aliasdomain` | —                          | domain          | the hosted domain it aliases |
| `mailbox`     | virtual_mailbox_maps       | address         | the address                  |
| `alias`       | virtual_alias_maps         | address/@domain | targets, comma separated     |
| `senderlogin` | smtpd_sender_login_maps    | address         | logins, comma separated      |
| `hostedsender`| check_sender_access (MX)   | address         | `550 5.7.1 ...` (an access   |
|               |                            |                 | action) for hosted senders   |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailstack.names import try_address, try_domain

if TYPE_CHECKING:
    from mailstack.lookup.resolver import Resolver

OK = "OK"
NOTFOUND = "NOTFOUND"
TEMP = "TEMP"
PERM = "PERM"


@dataclass(frozen=True)
class Answer:
    status: str
    data: str = ""

    def payload(self) -> bytes:
        return f"{self.status} {self.data}".encode()


NOT_FOUND = Answer(NOTFOUND)


def _domain(resolver: Resolver, key: str) -> Answer:
    name = try_domain(key)
    return Answer(OK, name) if name and resolver.is_domain(name) else NOT_FOUND


def _mail_domain(resolver: Resolver, key: str) -> Answer:
    """Hosted and alias domains in one class for Postfix (virtual_mailbox_domains, with
    virtual_alias_domains empty): Postfix's address resolver asks one table instead of
    two for every recipient, in the one trivial-rewrite process all smtpds and the queue
    manager wait on. Addresses in an alias domain are still rewritten by the `alias` map
    before delivery, and refused at RCPT when they rewrite to nobody."""
    name = try_domain(key)
    return Answer(OK, name) if name and resolver.is_mail_domain(name) else NOT_FOUND


def _alias_domain(resolver: Resolver, key: str) -> Answer:
    name = try_domain(key)
    target = resolver.alias_domain_target(name) if name else None
    return Answer(OK, target) if target else NOT_FOUND


def _mailbox(resolver: Resolver, key: str) -> Answer:
    address = try_address(key)
    return Answer(OK, address) if address and resolver.has_mailbox(address) else NOT_FOUND


def _alias(resolver: Resolver, key: str) -> Answer:
    if key.startswith("@"):
        domain = try_domain(key[1:])
        targets = resolver.catch_all(domain) if domain else []
    else:
        address = try_address(key)
        targets = (resolver.alias_targets(address) or []) if address else []
    return Answer(OK, ",".join(targets)) if targets else NOT_FOUND


def _sender_login(resolver: Resolver, key: str) -> Answer:
    address = try_address(key)
    owners = resolver.sender_logins(address) if address else []
    return Answer(OK, ",".join(owners)) if owners else NOT_FOUND


#: What the MX answers a client that is not logged in but claims a hosted sender: such mail
#: must come through submission (587/465), where the user authenticates.
HOSTED_SENDER_REJECT = (
    "550 5.7.1 Sender address is in a domain hosted here; "
    "log in and send through the submission port"
)


def _hosted_sender(resolver: Resolver, key: str) -> Answer:
    """An access-map action for envelope senders in a hosted domain (or alias domain).

    Postfix's `check_sender_access` also asks with bare domains, parent domains and
    `local@`; only full addresses are answered, so a parent-domain lookup for
    `x@sub.example.com` does not refuse subdomains that are not hosted.
    """
    local, at, raw_domain = key.rpartition("@")
    if not at or not local or not raw_domain:
        return NOT_FOUND
    # The domain decides, whatever the local part looks like: `"a b"@example.com`,
    # `a..b@example.com` or a UTF-8 local part are as forged as alice@example.com.
    domain = try_domain(raw_domain)
    if domain is None:
        return NOT_FOUND
    return Answer(OK, HOSTED_SENDER_REJECT) if resolver.is_mail_domain(domain) else NOT_FOUND


MAPS: dict[str, Callable[[Resolver, str], Answer]] = {
    "maildomain": _mail_domain,
    "domain": _domain,
    "aliasdomain": _alias_domain,
    "mailbox": _mailbox,
    "alias": _alias,
    "senderlogin": _sender_login,
    "hostedsender": _hosted_sender,
}


def answer(resolver: Resolver, name: str, key: str) -> Answer:
    """Answer one request; raises StoreUnavailable when the store cannot be read."""
    table = MAPS.get(name)
    if table is None:
        # A typo in main.cf must defer mail (PERM is a lookup error to Postfix), never
        # make every recipient "unknown" and bounce it.
        return Answer(PERM, f"unknown map {name[:64]!r}")
    return table(resolver, key)
