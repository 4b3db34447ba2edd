"""Errors of the datastore, typed so that the CLI, API and web UI can map them.

A field that fails validation raises `mailstack.errors.InvalidInput` (re-exported here).

StoreError
 ├── NotFound          the thing to change or read does not exist
 ├── Conflict          the change would break a rule (duplicate, still in use)
 ├── Forbidden         the acting user may not read or change this (API user tokens)
 └── StoreUnavailable  the database could not be reached or answered an error
"""

from __future__ import annotations

from mailstack.errors import ExitCode, InvalidInput, MailstackError

__all__ = [
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "StoreError",
    "StoreUnavailable",
]


class StoreError(MailstackError):
    """Base of every error the store raises on purpose."""


class NotFound(StoreError):
    """The domain, user, alias or script named does not exist."""


class Conflict(StoreError):
    """The write would create a duplicate or orphan something still in use."""


class Forbidden(StoreError):
    """The acting user may not touch this: it belongs to someone else, or to admins."""


class StoreUnavailable(StoreError):
    """The database is down or broken: callers should retry later, not give up."""

    exit_code = ExitCode.TEMPFAIL
