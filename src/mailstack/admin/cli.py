"""The admin command groups of the server profile, mounted on the main `mailstack` app.

Exit codes (see README "Exit codes" and docs/admin.md):
0 done; 1 the store refuses (unknown domain or user, duplicate, still in use) or no DKIM
key; 2 bad input (invalid address, quota, password, script, option); 69 sievec missing;
75 the database cannot be reached or opened (retry later).
"""

from __future__ import annotations

import typer

from mailstack.admin import (
    aliases,
    dkim,
    dkim_requests,
    dkim_rotation,
    dns,
    domains,
    init,
    queue,
    sieve,
    spam,
    tls,
    tokens,
    users,
)
from mailstack.admin import security as account_security

GROUPS: tuple[tuple[str, typer.Typer], ...] = (
    ("domain", domains.app),
    ("user", users.app),
    ("alias", aliases.app),
    ("sieve", sieve.app),
    ("dkim", dkim.app),
    ("spam", spam.app),
    ("token", tokens.app),
    ("tls", tls.app),
    ("queue", queue.app),
)


def register(app: typer.Typer) -> None:
    """Add `domain`, `user`, `alias`, `sieve`, `dkim` and `token` to the main app."""
    for name, group in GROUPS:
        app.add_typer(group, name=name)
    dkim_rotation.register(dkim.app)
    dkim_requests.register(dkim.app)
    dns.register(app)
    account_security.register(users.app)
    app.command("init")(init.init)
