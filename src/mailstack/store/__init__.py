"""The datastore: domains, users, aliases and sieve scripts (SQLite or PostgreSQL).

Writers use `MailStore` (the service layer, ORM classes in `models`); the lookup service
and greylisting query the Core tables in `tables` directly, without the ORM. The names
below are loaded at their first use: SQLAlchemy comes with them, and processes that only
need a lean submodule (the supervisor renders Dovecot's configuration with
`apppasswords`' format) must not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailstack.store.engine import create_engine_for, database_url, migrate, open_engine
    from mailstack.store.errors import (
        Conflict,
        Forbidden,
        InvalidInput,
        NotFound,
        StoreError,
        StoreUnavailable,
    )
    from mailstack.store.service import (
        UNCHANGED,
        AliasDomainInfo,
        AliasInfo,
        DomainInfo,
        MailStore,
        ScriptInfo,
        SpamSettings,
        UserInfo,
        parse_quota,
    )
    from mailstack.store.tokens import TokenInfo

#: Where each public name lives.
_HOMES = {
    "create_engine_for": "engine",
    "database_url": "engine",
    "migrate": "engine",
    "open_engine": "engine",
    "Conflict": "errors",
    "Forbidden": "errors",
    "InvalidInput": "errors",
    "NotFound": "errors",
    "StoreError": "errors",
    "StoreUnavailable": "errors",
    "UNCHANGED": "service",
    "AliasDomainInfo": "service",
    "AliasInfo": "service",
    "DomainInfo": "service",
    "MailStore": "service",
    "ScriptInfo": "service",
    "SpamSettings": "service",
    "UserInfo": "service",
    "parse_quota": "service",
    "TokenInfo": "tokens",
}

__all__ = [
    "UNCHANGED",
    "AliasDomainInfo",
    "AliasInfo",
    "Conflict",
    "DomainInfo",
    "Forbidden",
    "InvalidInput",
    "MailStore",
    "NotFound",
    "ScriptInfo",
    "SpamSettings",
    "StoreError",
    "StoreUnavailable",
    "TokenInfo",
    "UserInfo",
    "create_engine_for",
    "database_url",
    "migrate",
    "open_engine",
    "parse_quota",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
