"""Postfix socketmap tables: map name + key -> `OK`/`NOTFOUND` answer.

Configure Postfix with one socketmap per table, for example
`virtual_mailbox_domains = socketmap:unix:/run/mailstack/lookup.sock:domain`.

| map           | Postfix parameter          | key             | OK value                     |
|---------------|----------------------------|-----------------|------------------------------|
| `domain`      | virtual_mailbox_domains    | domain          | the domain                   |
| `aliasdomain` | virtual_alias_domains      | domain          | the hosted domain it aliases |
| `mailbox`     | virtual_mailbox_maps       | address         | the address                  |
| `alias`       | virtual_alias_maps         | address/@domain | targets, comma separated     |
| `senderlogin` | smtpd_sender_login_maps    | address         | logins, comma separated      |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailstack.lookup.resolver import Resolver
from mailstack.store.names import try_address, try_domain

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


MAPS: dict[str, Callable[[Resolver, str], Answer]] = {
    "domain": _domain,
    "aliasdomain": _alias_domain,
    "mailbox": _mailbox,
    "alias": _alias,
    "senderlogin": _sender_login,
}


def answer(resolver: Resolver, name: str, key: str) -> Answer:
    """Answer one request; raises StoreUnavailable when the store cannot be read."""
    table = MAPS.get(name)
    if table is None:
        # A typo in main.cf must defer mail (PERM is a lookup error to Postfix), never
        # make every recipient "unknown" and bounce it.
        return Answer(PERM, f"unknown map {name[:64]!r}")
    return table(resolver, key)
