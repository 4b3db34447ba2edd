"""Dovecot dict proxy server: passdb, userdb and sieve scripts for Dovecot 2.3.

Dovecot configuration this server answers (paths are examples):

    # dovecot-dict-auth.conf.ext, used by `passdb { driver = dict }` and `userdb { ... }`
    uri = proxy:/run/mailstack/dict.sock:mailstack
    password_key = passdb/%u
    user_key = userdb/%u
    iterate_prefix = userdb/
    default_pass_scheme = ARGON2ID

    # sieve: the user's active script, read-only (edits go through the store)
    sieve = dict:proxy:/run/mailstack/dict.sock:sieve;name=active

    # dovecot-dict-apppass.conf.ext, a second passdb Dovecot asks when the first refuses
    password_key = apppass/%u/%0.8w

Keys arrive as `shared/passdb/<user>`, `shared/apppass/<user>/<ident>`, `shared/userdb/<user>`,
`priv/sieve/name/<name>` and `priv/sieve/data/<id>`; `priv/` keys belong to the user named
in the HELLO line.
Values are JSON objects for passdb and userdb (Dovecot's default `value_format = json`).
Writes (transactions) are refused: the store is changed only through its service layer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TypeVar

from mailstack.lookup import dictproto
from mailstack.lookup.gateway import StoreGateway
from mailstack.lookup.resolver import Resolver
from mailstack.names import try_address
from mailstack.netserver import Exchange, FramingError, ProtocolListener, RequestConnection
from mailstack.store import apppasswords, passwords
from mailstack.store.errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

PASSDB_PREFIX = "shared/passdb/"
APP_PASSWORD_PREFIX = "shared/apppass/"  # noqa: S105 - a key prefix, no secret
USERDB_PREFIX = "shared/userdb/"
SIEVE_NAME_PREFIX = "priv/sieve/name/"
SIEVE_DATA_PREFIX = "priv/sieve/data/"
ACTIVE_SCRIPT_NAME = "active"  # `sieve = dict:...;name=active` reads the active script
IDLE_TIMEOUT = 600.0


def dict_unescape(value: str) -> str:
    """Undo Dovecot's dict_escape_string ('/' -> '\\\\|', '\\\\' -> '\\\\\\\\') in key parts."""
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append("/" if nxt == "|" else nxt)
        else:
            out.append(ch)
    return "".join(out)


def userdb_fields(
    address: str,
    quota_bytes: int | None,
    spam_threshold: int | None = None,
    spam_filter: bool = True,
    active_script: bool = True,
) -> dict[str, str]:
    """The user's fields for Dovecot. The spam ones override plugin settings the global
    Sieve step reads (`vnd.dovecot.config.spam_threshold`, `...spam_filter`). A user
    without an active Sieve script gets `sieve` empty (Pigeonhole: no personal script), so
    a delivery to them does not open a connection to the sieve dict to find none; the
    global steps (sieve_before, IMAPSieve's mailbox scripts) still run."""
    fields = {"user": address}
    if not active_script:
        fields["sieve"] = ""
    if quota_bytes:
        fields["quota_rule"] = f"*:storage={quota_bytes}B"
    if spam_threshold is not None:
        fields["sieve_env_spam_threshold"] = str(spam_threshold)
    if not spam_filter:
        fields["sieve_env_spam_filter"] = "off"
    return fields


#: What a dict socket may answer: `auth` (passdb, userdb: password hashes, for Dovecot's
#: auth process only) and `sieve` (scripts, for the mail processes that run Sieve).
AUTH = "auth"
SIEVE = "sieve"
EVERYTHING = frozenset({AUTH, SIEVE})


def _kind(key: str) -> str:
    return AUTH if key.startswith((PASSDB_PREFIX, USERDB_PREFIX, APP_PASSWORD_PREFIX)) else SIEVE


def lookup(resolver: Resolver, key: str, user: str) -> str | None:
    """The value for one dict key, or None (not found). Runs in a worker thread."""
    if key.startswith(PASSDB_PREFIX):
        address = try_address(key[len(PASSDB_PREFIX) :])
        account = resolver.account(address) if address else None
        if account is None or not account.enabled:
            return None
        # with TOTP on the account password is no mail password: a hash nobody can match
        stored = passwords.unusable_hash() if account.totp else account.password_hash
        return json.dumps({"password": stored, "user": account.address})
    if key.startswith(APP_PASSWORD_PREFIX):
        return _app_password(resolver, key[len(APP_PASSWORD_PREFIX) :])
    if key.startswith(USERDB_PREFIX):
        address = try_address(key[len(USERDB_PREFIX) :])
        account = resolver.account(address) if address else None
        if account is None:
            return None
        return json.dumps(
            userdb_fields(
                account.address,
                account.quota_bytes,
                account.spam_threshold,
                account.spam_filter,
                account.active_script,
            )
        )
    owner = try_address(user) if user else None
    if owner is None:
        return None
    if key.startswith(SIEVE_NAME_PREFIX):
        name = dict_unescape(key[len(SIEVE_NAME_PREFIX) :])
        if name == ACTIVE_SCRIPT_NAME:
            return resolver.active_script_id(owner)
        return resolver.named_script_id(owner, name)
    if key.startswith(SIEVE_DATA_PREFIX):
        return resolver.script_data(owner, dict_unescape(key[len(SIEVE_DATA_PREFIX) :]))
    return None


def _app_password(resolver: Resolver, rest: str) -> str | None:
    """`<user>/<ident>`: the one app password hash Dovecot's second passdb verifies."""
    user, _, ident = rest.rpartition("/")
    address = try_address(user)
    if address is None or not apppasswords.is_ident(ident):
        return None
    stored = resolver.app_password_hash(address, ident)
    return None if stored is None else json.dumps({"password": stored, "user": address})


def iterate(resolver: Resolver, paths: tuple[str, ...], flags: int, limit: int) -> list[str]:
    """Reply lines for an ITERATE; only the userdb list (`doveadm user '*'`) is offered."""
    rows: list[str] = []
    if USERDB_PREFIX in paths:
        for address, quota_bytes in resolver.accounts():
            value = ""
            if not flags & dictproto.ITERATE_FLAG_NO_VALUE:
                value = json.dumps(userdb_fields(address, quota_bytes))
            rows.append(dictproto.reply_row(USERDB_PREFIX + address, value))
            if limit and len(rows) >= limit:
                break
    return rows


def _split_line(buffer: bytearray) -> bytes | None:
    """The next line (without its LF), or None; an overlong line ends the connection."""
    end = buffer.find(b"\n", 0, dictproto.MAX_LINE + 1)
    if end < 0:
        if len(buffer) > dictproto.MAX_LINE:
            raise FramingError(dictproto.reply_fail("line too long").encode(), "line too long")
        return None
    line = bytes(buffer[:end])
    del buffer[: end + 1]
    return line


class DictServer(ProtocolListener):
    name = "dict"

    def __init__(
        self,
        gateway: StoreGateway,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        serves: frozenset[str] = EVERYTHING,
    ) -> None:
        """`serves`: the kinds of keys answered (AUTH, SIEVE); others are "not found"."""
        super().__init__()
        self.gateway = gateway
        self.idle_timeout = idle_timeout
        self.serves = serves

    def make_protocol(self) -> asyncio.Protocol:
        """One connection: its HELLO state lives in this closure, requests in order."""
        state: list[dictproto.Hello | None] = [None]

        async def answer(line: bytes) -> tuple[bytes, bool]:
            reply, state[0], keep_open = await self.respond(line, state[0])
            return reply.encode(), keep_open

        exchange = Exchange(split=_split_line, answer=answer)
        return RequestConnection(self, exchange, self.idle_timeout)

    async def respond(
        self, raw: bytes, hello: dictproto.Hello | None
    ) -> tuple[str, dictproto.Hello | None, bool]:
        """Reply text, the connection's HELLO state, and whether to keep the connection."""
        try:
            command = dictproto.parse_line(raw.decode("utf-8"))
        except (UnicodeDecodeError, dictproto.DictProtocolError) as exc:
            log.warning("dict: protocol error: %s", exc)
            return dictproto.reply_fail(f"protocol error: {exc}"), hello, True
        if command.name == dictproto.HELLO:
            try:
                return "", dictproto.parse_hello(command), True
            except dictproto.DictProtocolError as exc:
                return dictproto.reply_fail(str(exc)), None, False
        if command.name in dictproto.NO_REPLY:
            return "", hello, True
        if command.name in (dictproto.COMMIT, dictproto.COMMIT_ASYNC):
            transaction = command.args[0] if command.args else ""
            return dictproto.reply_commit_fail(transaction, "read-only dict"), hello, True
        if hello is None:
            return dictproto.reply_fail("HELLO must come first"), hello, True
        if command.name == dictproto.LOOKUP:
            return await self._lookup(command, hello), hello, True
        return await self._iterate(command, hello), hello, True

    async def _lookup(self, command: dictproto.Command, hello: dictproto.Hello) -> str:
        if not command.args or not command.args[0]:
            return dictproto.reply_fail("LOOKUP needs a key")
        key = command.args[0]
        if _kind(key) not in self.serves:
            return dictproto.reply_not_found()
        user = command.args[1] if len(command.args) > 1 and command.args[1] else hello.user
        value = await self._guarded(lookup, key, user)
        if isinstance(value, Exception):
            return dictproto.reply_fail("lookup failed: store unavailable")
        return dictproto.reply_not_found() if value is None else dictproto.reply_ok(value)

    async def _iterate(self, command: dictproto.Command, hello: dictproto.Hello) -> str:
        args = command.args
        try:
            flags, limit = int(args[0]), int(args[1])
        except (IndexError, ValueError):
            return dictproto.reply_iter_fail("ITERATE: broken input")
        paths = args[2:-1] if hello.major >= 3 else args[2:]  # v3 appends the user
        if AUTH not in self.serves:
            return dictproto.reply_iter_end()
        rows = await self._guarded(iterate, tuple(paths), flags, limit)
        if isinstance(rows, Exception):
            return dictproto.reply_iter_fail("iterate failed: store unavailable")
        return "".join(rows) + dictproto.reply_iter_end()

    async def _guarded(self, function: Callable[..., T], *args: object) -> T | Exception:
        try:
            return await self.gateway.call(function, *args)
        except StoreUnavailable as exc:
            log.warning("dict: store unavailable: %s", exc)
            return exc
        except Exception as exc:  # a failure reply, never a dead connection
            log.exception("dict: lookup failed")
            return exc
