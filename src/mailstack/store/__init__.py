"""The datastore: domains, users, aliases and sieve scripts (SQLite or PostgreSQL).

Writers use `MailStore` (the service layer); the lookup service reads the tables in
`models` directly. Importing this package pulls in SQLAlchemy, so processes that do not
need the store should not import it.
"""

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
