"""One ManageSieve connection: RFC 5804's state machine on top of `MailStore`.

Before login only CAPABILITY, STARTTLS, AUTHENTICATE, NOOP and LOGOUT are allowed; the
script commands act on the logged-in user's scripts. The store is synchronous SQLAlchemy,
so each call runs in a worker thread, and its errors become the RFC's response codes:
an outage is `NO (TRYLATER)` so that clients retry instead of giving up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from mailstack import __version__
from mailstack.managesieve import sasl
from mailstack.managesieve.wire import (
    CRLF,
    Atom,
    BadCommand,
    CommandError,
    CommandReader,
    FatalError,
    IdleTimeout,
    String,
    Token,
    capability_lines,
    encode_string,
    status,
)
from mailstack.names import try_address, validate_script_name
from mailstack.sieve import SieveCheckUnavailable
from mailstack.store.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from mailstack.throttle import LoginThrottle

if TYPE_CHECKING:
    from mailstack.store import MailStore

log = logging.getLogger(__name__)

T = TypeVar("T")
Checker = Callable[[str], str | None]

MAX_AUTH_FAILURES = 3  # per connection; then BYE, so guessing costs a reconnect each time
# Before login a client needs only short strings (SASL exchanges): anything bigger, or a
# client that sits silent, is cut off early so that idle connections cost little.
PRELOGIN_MAX_LITERAL = 4096
PRELOGIN_IDLE_TIMEOUT = 30.0
MAX_BAD_COMMANDS = 10  # malformed commands in a row before the connection is dropped
SEND_TIMEOUT = 30.0  # a client that stops reading its replies is cut off
HANDSHAKE_TIMEOUT = 30.0  # seconds for the TLS handshake after STARTTLS
HAVESPACE_MAX = 4294967295  # number = 1*DIGIT, at most 2^32 - 1 (RFC 5804 section 4)


@dataclass(frozen=True)
class Settings:
    """What every session of one server shares."""

    open_store: Callable[[], MailStore]
    ssl_context: ssl.SSLContext | None
    checker: Checker
    max_script_bytes: int
    allow_plaintext_auth: bool
    idle_timeout: float
    auth_failure_delay: float
    extensions: tuple[str, ...]
    throttle: LoginThrottle
    prelogin_idle_timeout: float = PRELOGIN_IDLE_TIMEOUT

    @cached_property
    def store(self) -> MailStore:
        """The datastore, opened at its first use (the first login)."""
        return self.open_store()


class _Close(Exception):
    """End the session after the reply already sent (LOGOUT, too many failures)."""


def _strings(command: str, args: Sequence[Token], required: int, optional: int = 0) -> list[str]:
    """The arguments as text, checking their number and that each is a string."""
    if not required <= len(args) <= required + optional:
        wanted = f"{required}" if not optional else f"{required} to {required + optional}"
        raise BadCommand(f"{command} takes {wanted} string argument(s)")
    texts = []
    for arg in args:
        if not isinstance(arg, String):
            raise BadCommand(f"{command}: arguments must be quoted strings or literals")
        texts.append(arg.text())
    return texts


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _script_name(value: str) -> str:
    try:
        return validate_script_name(value)
    except InvalidInput as exc:
        raise CommandError(f"invalid script name: {exc.message}") from None


class Session:
    """Serves one client from greeting to close; `run()` never raises for client errors."""

    def __init__(
        self,
        settings: Settings,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.writer = writer
        self.commands = CommandReader(
            reader, max_literal=PRELOGIN_MAX_LITERAL, idle=settings.prelogin_idle_timeout
        )
        self._prelogin_limits()
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        self.client = peer[0] if isinstance(peer, tuple) else "unix"
        self.user: str | None = None
        self.tls = False
        self.auth_failures = 0
        self._handlers: dict[str, tuple[Callable[[list[Token]], Awaitable[None]], bool | None]]
        self._handlers = {
            # name: (handler, True = needs login / False = only before login / None = any)
            "CAPABILITY": (self.capability, None),
            "NOOP": (self.noop, None),
            "LOGOUT": (self.logout, None),
            "STARTTLS": (self.starttls, False),
            "AUTHENTICATE": (self.authenticate, False),
            "UNAUTHENTICATE": (self.unauthenticate, True),
            "HAVESPACE": (self.havespace, True),
            "PUTSCRIPT": (self.putscript, True),
            "CHECKSCRIPT": (self.checkscript, True),
            "LISTSCRIPTS": (self.listscripts, True),
            "SETACTIVE": (self.setactive, True),
            "GETSCRIPT": (self.getscript, True),
            "DELETESCRIPT": (self.deletescript, True),
            "RENAMESCRIPT": (self.renamescript, True),
        }

    def _prelogin_limits(self) -> None:
        self.commands.set_limits(
            PRELOGIN_MAX_LITERAL, self.settings.prelogin_idle_timeout, discard=False
        )

    def _login_limits(self) -> None:
        self.commands.set_limits(self.settings.max_script_bytes, self.settings.idle_timeout)

    # -- the connection ---------------------------------------------------------------------

    async def run(self) -> None:
        log.debug("connection from %s", self.peer)
        try:
            await self._send(self._capabilities() + status("OK", "mailstack ManageSieve ready"))
            await self._serve()
        except _Close:
            pass
        except IdleTimeout:
            await self._bye("no command for too long, closing the connection")
        except FatalError as exc:
            log.info("%s: closing the connection: %s", self.peer, exc)
            await self._bye(f"{exc}, closing the connection")
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.debug("%s went away: %s", self.peer, exc)
        except Exception:  # a bug must cost one connection, never the server
            log.exception("unexpected error serving %s", self.peer)
            await self._bye("internal server error")
        log.debug("connection from %s closed", self.peer)

    async def _serve(self) -> None:
        bad_in_a_row = 0
        while True:
            try:
                tokens = await self.commands.command()
                if not tokens:
                    continue  # a stray empty line is not worth an answer
                await self._dispatch(tokens)
                bad_in_a_row = 0
            except CommandError as exc:
                await self._send(status("NO", exc.message, exc.code))
                if isinstance(exc, BadCommand):
                    bad_in_a_row += 1
                    if bad_in_a_row >= MAX_BAD_COMMANDS:
                        raise FatalError("too many invalid commands") from None
                else:
                    bad_in_a_row = 0

    async def _dispatch(self, tokens: list[Token]) -> None:
        name, args = tokens[0], tokens[1:]
        if not isinstance(name, Atom):
            raise BadCommand("a command must start with its name")
        command = name.text.upper()
        entry = self._handlers.get(command)
        if entry is None:
            raise BadCommand(f"unknown command {command[:40]}")
        handler, needs_login = entry
        if needs_login and self.user is None:
            raise BadCommand(f"{command} needs a login first (AUTHENTICATE)")
        if needs_login is False and self.user is not None:
            raise BadCommand(f"{command} is not allowed after login")
        await handler(args)

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self.writer.drain()
        except TimeoutError:
            raise ConnectionError("the client does not read its replies") from None

    async def _bye(self, message: str) -> None:
        """Best effort: the peer may already be gone."""
        with contextlib.suppress(Exception):
            self.writer.write(status("BYE", message))
            async with asyncio.timeout(5):
                await self.writer.drain()

    async def _ok(self, message: str = "Done", code: bytes | str | None = None) -> None:
        await self._send(status("OK", message, code))

    def _verify(self, user: str, password: str) -> bool:
        """The password check, in a thread: the first one opens the store and loads the
        ORM, which must not stall the worker's other listeners."""
        from mailstack.store.security import AccountSecurity

        return AccountSecurity(self.settings.store).verify_mail_password(user, password)

    async def _store(self, method: Callable[..., T], *args: Any, conflict: str = "") -> T:
        """Call the store in a thread; map its errors to NO replies."""
        try:
            return await asyncio.to_thread(method, *args)
        except StoreUnavailable as exc:
            log.warning("%s: store unavailable: %s", self.peer, exc)
            raise CommandError(
                "the mail store is unavailable, try again later", "TRYLATER"
            ) from None
        except NotFound as exc:
            raise CommandError(str(exc), "NONEXISTENT") from None
        except Conflict as exc:
            raise CommandError(str(exc), conflict or None) from None
        except InvalidInput as exc:
            raise CommandError(str(exc)) from None

    # -- capabilities, TLS and login --------------------------------------------------------

    def _auth_allowed(self) -> bool:
        return self.tls or self.settings.ssl_context is None or self.settings.allow_plaintext_auth

    def _capabilities(self) -> bytes:
        extensions = self.settings.extensions
        items: list[tuple[str, str | None]] = [
            ("IMPLEMENTATION", f"mailstack {__version__}"),
            ("SASL", " ".join(sasl.MECHANISMS) if self._auth_allowed() else ""),
            ("SIEVE", " ".join(extensions)),
        ]
        if "enotify" in extensions:
            items.append(("NOTIFY", "mailto"))
        if self.settings.ssl_context is not None and not self.tls and self.user is None:
            items.append(("STARTTLS", None))
        if self.user is not None:
            items.append(("OWNER", self.user))
        items += [("UNAUTHENTICATE", None), ("VERSION", "1.0")]
        return capability_lines(items)

    async def capability(self, args: list[Token]) -> None:
        _strings("CAPABILITY", args, 0)
        await self._send(self._capabilities() + status("OK", "Capability completed"))

    async def noop(self, args: list[Token]) -> None:
        tag = _strings("NOOP", args, 0, 1)
        code = b"TAG " + encode_string(tag[0]) if tag else None
        await self._ok("Done", code)

    async def logout(self, args: list[Token]) -> None:
        _strings("LOGOUT", args, 0)
        await self._ok("Logout completed")
        raise _Close

    async def starttls(self, args: list[Token]) -> None:
        _strings("STARTTLS", args, 0)
        context = self.settings.ssl_context
        if context is None:
            raise CommandError("TLS is not available on this server")
        if self.tls:
            raise CommandError("TLS is already active")
        # Anything the client sent after STARTTLS arrived in clear text and must not be
        # taken as if it had come through TLS (the STARTTLS command injection attack).
        if getattr(self.reader, "_buffer", b""):
            raise FatalError("data after STARTTLS before the TLS handshake")
        await self._ok("Begin TLS negotiation now")
        try:
            await self.writer.start_tls(context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except TimeoutError:
            raise ConnectionError("no TLS handshake") from None
        self.tls = True
        log.debug("%s: TLS established", self.peer)
        await self._send(self._capabilities() + status("OK", "TLS negotiation successful"))

    async def _sasl_response(self, challenge: bytes) -> bytes:
        """Send a challenge and read the client's answer; `"*"` cancels."""
        await self._send(encode_string(_b64(challenge)) + CRLF)
        answer = _strings("AUTHENTICATE", await self.commands.command(), 1)[0]
        if answer == "*":
            raise CommandError("authentication cancelled")
        return sasl.decode_base64(answer.encode("ascii", errors="replace"))

    async def authenticate(self, args: list[Token]) -> None:
        texts = _strings("AUTHENTICATE", args, 1, 1)
        mechanism = sasl.MECHANISMS.get(texts[0].upper())
        if mechanism is None:
            raise CommandError(f"unsupported SASL mechanism; use {' or '.join(sasl.MECHANISMS)}")
        if not self._auth_allowed():
            raise CommandError("use STARTTLS before authenticating", "ENCRYPT-NEEDED")
        exchange = mechanism()
        credentials: sasl.Credentials | None = None
        try:
            if len(texts) == 2:
                initial = sasl.decode_base64(texts[1].encode("ascii", errors="replace"))
                credentials = exchange.step(initial)
            for _ in range(2):  # LOGIN asks for two things, PLAIN for one
                if credentials is not None:
                    break
                credentials = exchange.step(await self._sasl_response(exchange.challenge()))
        except sasl.SaslError as exc:
            raise CommandError(str(exc)) from None
        if credentials is None:
            raise CommandError("the SASL exchange did not end")
        await self._login(credentials)

    async def _login(self, credentials: sasl.Credentials) -> None:
        user = try_address(credentials.username)
        wanted = try_address(credentials.authzid) if credentials.authzid else user
        if user is not None and wanted != user:
            raise CommandError("logging in as another user is not supported")
        throttle = self.settings.throttle
        wait = throttle.delay(self.client, user)
        if wait:  # earlier failures from this address or for this account slow it down
            await asyncio.sleep(wait)
        # the mail-client rule (app passwords; the account password only while TOTP is off);
        # an unknown user is checked too (against a dummy hash): same cost, same answer
        valid = await self._store(self._verify, user or "", credentials.password)
        if not valid:
            self.auth_failures += 1
            throttle.failed(self.client, user)
            log.info("%s: authentication failed for %r", self.peer, credentials.username[:100])
            if self.settings.auth_failure_delay:
                await asyncio.sleep(self.settings.auth_failure_delay)
            if self.auth_failures >= MAX_AUTH_FAILURES:
                await self._send(status("NO", "authentication failed"))
                raise FatalError("too many failed logins")
            raise CommandError("authentication failed")
        self.user = user
        self._login_limits()
        log.info("%s: %s logged in", self.peer, user)
        await self._ok("Logged in")

    async def unauthenticate(self, args: list[Token]) -> None:
        _strings("UNAUTHENTICATE", args, 0)
        log.info("%s: %s logged out (UNAUTHENTICATE)", self.peer, self.user)
        self.user = None
        self._prelogin_limits()
        await self._ok("Logged out")

    # -- scripts ----------------------------------------------------------------------------

    @property
    def _owner(self) -> str:
        assert self.user is not None  # noqa: S101 - dispatch checks the login
        return self.user

    async def _check(self, content: String) -> str:
        """The script as text if it compiles; otherwise NO with the compiler's errors."""
        limit = self.settings.max_script_bytes
        if len(content.data) > limit:
            raise CommandError(f"scripts may have at most {limit} bytes", "QUOTA/MAXSIZE")
        text = content.text()
        try:
            problem = await asyncio.to_thread(self.settings.checker, text)
        except SieveCheckUnavailable as exc:
            log.error("cannot check sieve scripts: %s", exc)
            raise CommandError(
                "scripts cannot be checked now, try again later", "TRYLATER"
            ) from None
        if problem is not None:
            raise CommandError(problem)
        return text

    async def havespace(self, args: list[Token]) -> None:
        if len(args) != 2 or not isinstance(args[1], Atom) or not args[1].text.isdigit():
            raise BadCommand("HAVESPACE takes a script name and a size in bytes")
        _script_name(_strings("HAVESPACE", args[:1], 1)[0])
        size = int(args[1].text)
        if size > HAVESPACE_MAX:
            raise BadCommand("the size is not a valid number")
        if size > self.settings.max_script_bytes:
            raise CommandError(
                f"scripts may have at most {self.settings.max_script_bytes} bytes",
                "QUOTA/MAXSIZE",
            )
        await self._ok("Putscript would succeed")

    async def putscript(self, args: list[Token]) -> None:
        content = args[1] if len(args) == 2 else None
        if not isinstance(content, String):
            raise BadCommand("PUTSCRIPT takes a script name and the script")
        name = _script_name(_strings("PUTSCRIPT", args[:1], 1)[0])
        text = await self._check(content)
        await self._store(self.settings.store.put_script, self._owner, name, text)
        log.info("%s: %s stored sieve script %r", self.peer, self._owner, name)
        await self._ok("Script stored")

    async def checkscript(self, args: list[Token]) -> None:
        content = args[0] if len(args) == 1 else None
        if not isinstance(content, String):
            raise BadCommand("CHECKSCRIPT takes the script")
        await self._check(content)
        await self._ok("Script is valid")

    async def listscripts(self, args: list[Token]) -> None:
        _strings("LISTSCRIPTS", args, 0)
        scripts = await self._store(self.settings.store.list_scripts, self._owner)
        lines = b"".join(
            encode_string(s.name) + (b" ACTIVE" if s.active else b"") + CRLF for s in scripts
        )
        await self._send(lines + status("OK", "Listscripts completed"))

    async def setactive(self, args: list[Token]) -> None:
        (name,) = _strings("SETACTIVE", args, 1)
        await self._store(self.settings.store.activate_script, self._owner, name or None)
        if name:
            log.info("%s: %s activated sieve script %r", self.peer, self._owner, name)
        else:
            log.info("%s: %s deactivated their sieve scripts", self.peer, self._owner)
        await self._ok("Active script set" if name else "No script is active now")

    async def getscript(self, args: list[Token]) -> None:
        (name,) = _strings("GETSCRIPT", args, 1)
        script = await self._store(self.settings.store.get_script, self._owner, name)
        data = (script.content or "").encode("utf-8")
        await self._send(
            b"{%d}\r\n" % len(data) + data + CRLF + status("OK", "Getscript completed")
        )

    async def deletescript(self, args: list[Token]) -> None:
        (name,) = _strings("DELETESCRIPT", args, 1)
        await self._store(self.settings.store.remove_script, self._owner, name, conflict="ACTIVE")
        log.info("%s: %s deleted sieve script %r", self.peer, self._owner, name)
        await self._ok("Script deleted")

    async def renamescript(self, args: list[Token]) -> None:
        old, new = _strings("RENAMESCRIPT", args, 2)
        new = _script_name(new)
        store = self.settings.store
        await self._store(store.rename_script, self._owner, old, new, conflict="ALREADYEXISTS")
        log.info("%s: %s renamed sieve script %r to %r", self.peer, self._owner, old, new)
        await self._ok("Script renamed")
