"""One authenticated SMTP connection from the hop to the real relay host.

aiosmtplib speaks the client side. Commands go through `execute_command` rather than its
`mail()`/`rcpt()` helpers so that the relay host's reply comes back as it is (code and
text, for Postfix to see) instead of as an exception, and so that the null sender and
the parameters Postfix chose pass through untouched.

AUTH XOAUTH2 is done here too, not by aiosmtplib's helper: when the server refuses a
token it first sends a 334 challenge carrying a base64 JSON error (Google's
`{"status":"400",...}`), and that detail is what makes the log line useful.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
from aiosmtplib.auth import auth_xoauth2_encode

from mailstack.xoauth2.errors import TokenEndpointUnavailable, TokenFileError, TokenRefreshError
from mailstack.xoauth2.refresh import TokenManager
from mailstack.xoauth2.replies import (
    AUTH_REJECTED,
    RELAY_LOST,
    RELAY_TLS_FAILED,
    RELAY_UNREACHABLE,
    TOKEN_ENDPOINT_DOWN,
    TOKEN_FILE_UNUSABLE,
    TOKEN_REFRESH_REFUSED,
    Deferral,
    Reply,
)
from mailstack.xoauth2.trace import Trace

TlsMode = Literal["starttls", "tls", "none"]

_LOST = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, ConnectionError)
_MAIL_PARAMS = {"SIZE": "size", "BODY": "8bitmime", "SMTPUTF8": "smtputf8"}
_MAX_DETAIL = 200


@dataclass(frozen=True)
class UpstreamTarget:
    """Where and how to reach the relay host, and as whom."""

    host: str
    port: int
    tls: TlsMode
    username: str
    timeout: float = 60.0
    data_timeout: float = 600.0  # the final reply after DATA; Postfix itself waits 600 s
    tls_context: ssl.SSLContext | None = None


class UpstreamLost(Exception):
    """The relay host went away (or stopped answering) in the middle of a command."""


class Upstream:
    """Connect, secure, authenticate, then relay one transaction at a time."""

    def __init__(
        self, target: UpstreamTarget, tokens: TokenManager, trace: Trace, helo_name: str
    ) -> None:
        self.target = target
        self._tokens = tokens
        self.trace = trace
        self._helo = helo_name
        self._client: aiosmtplib.SMTP | None = None
        self.in_transaction = False
        self._authenticated = False

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    @property
    def ready(self) -> bool:
        """Connected and authenticated: able to take MAIL."""
        return self._authenticated and self.connected

    async def open(self) -> None:
        """Ready to take MAIL, or raise Deferral with the reason."""
        await self._connect()
        token = await self._token(rejected=None)
        reply, detail = await self._auth(token)
        if reply.code == 235:
            self._authenticated = True
            return
        if 500 <= reply.code < 600:
            # A token we thought valid was refused: it may have been revoked early.
            # Refresh once (unless another delivery already did) and try again.
            token = await self._token(rejected=token)
            if not self.connected:
                await self._connect()
            reply, detail = await self._auth(token)
            if reply.code == 235:
                self._authenticated = True
                return
        raise Deferral(
            AUTH_REJECTED,
            f"relay host {self._where()} rejected AUTH XOAUTH2 for {self.target.username}: "
            f"{reply.code} {_one_line(reply.text)}{detail}",
        )

    async def mail(self, sender: str, options: Iterable[str]) -> Reply:
        address = "" if sender == "<>" else sender
        params = self._supported_params(options)
        reply = await self._command(f"MAIL FROM:<{address}>", params)
        self.in_transaction = reply.positive
        return reply

    async def rcpt(self, recipient: str, options: Iterable[str]) -> Reply:
        return await self._command(f"RCPT TO:<{recipient}>", list(options))

    async def data(self, content: bytes) -> Reply:
        client = self._require()
        if not content.endswith(b"\r\n"):
            content += b"\r\n"
        self.trace.add(f"-> DATA ({len(content)} bytes)")
        try:
            response = await client.data(content, timeout=self.target.data_timeout)
            reply = Reply(response.code, response.message)
        except aiosmtplib.SMTPResponseException as exc:
            reply = Reply(exc.code, exc.message)
        except _LOST as exc:
            self._lost()
            raise UpstreamLost(f"during DATA: {type(exc).__name__}") from None
        finally:
            self.in_transaction = False
        self.trace.add(f"<- {reply.code} {_one_line(reply.text)}")
        return reply

    async def rset(self) -> None:
        if self.connected and self.in_transaction:
            with contextlib.suppress(UpstreamLost):
                await self._command("RSET", [])
        self.in_transaction = False

    async def close(self) -> None:
        """QUIT politely when possible; never raises."""
        client, self._client = self._client, None
        self.in_transaction = self._authenticated = False
        if client is None:
            return
        if client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit(timeout=5)
        client.close()

    # -- internals ----------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.target.host}:{self.target.port}"

    def _require(self) -> aiosmtplib.SMTP:
        if self._client is None or not self._client.is_connected:
            raise UpstreamLost("not connected")
        return self._client

    def _lost(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self.in_transaction = False
        self._authenticated = False

    async def _command(self, line: str, params: list[str]) -> Reply:
        client = self._require()
        full = " ".join([line, *params])
        self.trace.add(f"-> {full}")
        try:
            response = await client.execute_command(full.encode("utf-8"))
        except _LOST as exc:
            self._lost()
            raise UpstreamLost(f"during {line.split(':')[0]}: {type(exc).__name__}") from None
        self.trace.add(f"<- {response.code} {_one_line(response.message)}")
        return Reply(response.code, response.message)

    def _supported_params(self, options: Iterable[str]) -> list[str]:
        """MAIL parameters the relay host advertised; the rest would draw a 555."""
        client = self._require()
        kept = []
        for option in options:
            keyword = option.split("=", 1)[0].upper()
            extension = _MAIL_PARAMS.get(keyword)
            if extension is not None and client.supports_extension(extension):
                kept.append(option)
        return kept

    async def _connect(self) -> None:
        target = self.target
        self._lost()
        client = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            use_tls=target.tls == "tls",
            start_tls=False,
            tls_context=target.tls_context if target.tls != "none" else None,
            local_hostname=self._helo,
            timeout=target.timeout,
        )
        self.trace.add(f"connecting to {self._where()} ({target.tls})")
        try:
            greeting = await client.connect()
            self.trace.add(f"<- {greeting.code} {_one_line(greeting.message)}")
            await client.ehlo()
        except ssl.SSLError as exc:
            client.close()
            raise Deferral(RELAY_TLS_FAILED, f"TLS to {self._where()} failed: {exc}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise Deferral(
                RELAY_UNREACHABLE, f"cannot connect to relay host {self._where()}: {exc}"
            ) from None
        self._client = client
        if target.tls == "starttls":
            await self._starttls(client)

    async def _starttls(self, client: aiosmtplib.SMTP) -> None:
        if not client.supports_extension("starttls"):
            self._lost()
            raise Deferral(
                RELAY_TLS_FAILED,
                f"relay host {self._where()} does not offer STARTTLS; the token is never "
                "sent in clear (use port 465 for implicit TLS)",
            )
        self.trace.add("-> STARTTLS")
        try:
            await client.starttls()
            await client.ehlo()
        except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as exc:
            self._lost()
            raise Deferral(
                RELAY_TLS_FAILED, f"STARTTLS with {self._where()} failed: {exc}"
            ) from None
        self.trace.add("TLS established")

    async def _token(self, rejected: str | None) -> str:
        try:
            return await self._tokens.access_token(rejected=rejected)
        except TokenFileError as exc:
            raise Deferral(TOKEN_FILE_UNUSABLE, str(exc)) from None
        except TokenEndpointUnavailable as exc:
            raise Deferral(TOKEN_ENDPOINT_DOWN, str(exc)) from None
        except TokenRefreshError as exc:
            raise Deferral(TOKEN_REFRESH_REFUSED, str(exc)) from None

    async def _auth(self, token: str) -> tuple[Reply, str]:
        """Send AUTH XOAUTH2; returns the final reply and the server's error detail."""
        client = self._require()
        blob = auth_xoauth2_encode(self.target.username, token)
        self.trace.add(f"-> AUTH XOAUTH2 (user={self.target.username}, token redacted)")
        detail = ""
        try:
            response = await client.execute_command(b"AUTH", b"XOAUTH2", blob)
            if response.code == 334:
                challenge = _decode_challenge(response.message)
                detail = f"; server said {challenge}"
                self.trace.add(f"<- 334 {challenge}")
                response = await client.execute_command(b"")
        except _LOST as exc:
            self._lost()
            raise Deferral(
                RELAY_LOST, f"relay host {self._where()} dropped the connection during AUTH"
            ) from exc
        self.trace.add(f"<- {response.code} {_one_line(response.message)}")
        return Reply(response.code, response.message), detail


def _decode_challenge(message: str) -> str:
    """The JSON error inside an XOAUTH2 334 challenge, printable and short."""
    try:
        text = base64.b64decode(message.strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        text = message
    return _one_line(text)[:_MAX_DETAIL]


def _one_line(text: str) -> str:
    return " / ".join(part.strip() for part in text.splitlines() if part.strip())
