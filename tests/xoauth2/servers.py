"""Real servers on 127.0.0.1 for the XOAUTH2 tests: a token endpoint and an XOAUTH2 relay.

Both are real network servers (aiohttp, aiosmtpd) that tests steer through plain
attributes: revoke a token, take the endpoint down, reject a recipient.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

CLIENT_ID = "client-id-0123456789"
CLIENT_SECRET = "client-secret-s3cr3t-abcdef"
USERNAME = "relay.user@example.com"


@dataclass
class Issued:
    access_token: str
    refresh_token: str
    expiry: float


class TokenServer:
    """An OAuth2 token endpoint (refresh_token grant only) on a free loopback port."""

    def __init__(self) -> None:
        self.access: dict[str, float] = {}  # access token -> expiry
        self.refresh: set[str] = set()
        self.lifetime = 3600
        self.rotate = False
        self.status: int | None = None  # e.g. 503 to answer every request with it
        self.gate: asyncio.Event | None = None  # hold refreshes until set
        self.requests: list[dict[str, str]] = []
        self.pending = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def granted(self) -> int:
        """Refresh requests that produced a new access token."""
        return sum(1 for r in self.requests if r.get("_granted"))

    def issue(self, lifetime: float | None = None) -> Issued:
        """Tokens as if the user had just authorised the app."""
        refresh = "rt-" + secrets.token_urlsafe(16)
        self.refresh.add(refresh)
        access, expiry = self._new_access(lifetime)
        return Issued(access, refresh, expiry)

    def _new_access(self, lifetime: float | None = None) -> tuple[str, float]:
        access = "at-" + secrets.token_urlsafe(16)
        expiry = time.time() + (self.lifetime if lifetime is None else lifetime)
        self.access[access] = expiry
        return access, expiry

    def valid(self, access_token: str) -> bool:
        return self.access.get(access_token, 0) > time.time()

    def secrets_seen(self) -> set[str]:
        """Every token value this endpoint ever handed out, plus the client secret."""
        return {*self.access, *self.refresh, CLIENT_SECRET}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the listener: new connections are refused until start() again."""
        runner, self._runner = self._runner, None
        if self.gate is not None:
            self.gate.set()
        if runner is not None:
            await runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        record: dict[str, Any] = {k: str(v) for k, v in form.items()}
        self.requests.append(record)
        if self.status is not None:
            return web.json_response({"error": "temporarily_unavailable"}, status=self.status)
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "refresh_token":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        refresh = str(form.get("refresh_token", ""))
        if refresh not in self.refresh:
            return web.json_response(
                {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                },
                status=400,
            )
        if self.gate is not None:
            self.pending += 1
            try:
                await self.gate.wait()
            finally:
                self.pending -= 1
        access, _ = self._new_access()
        body: dict[str, Any] = {
            "access_token": access,
            "expires_in": self.lifetime,
            "token_type": "Bearer",
        }
        if self.rotate:
            self.refresh.discard(refresh)
            body["refresh_token"] = "rt-" + secrets.token_urlsafe(16)
            self.refresh.add(body["refresh_token"])
        record["_granted"] = "1"
        return web.json_response(body)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    auth_user: str


@dataclass
class AuthAttempt:
    user: str
    token: str
    ok: bool
    tls: bool


@dataclass
class RelayServer:
    """An SMTP relay that only takes mail after AUTH XOAUTH2 with a token the endpoint issued."""

    tokens: TokenServer
    username: str = USERNAME
    tls_context: Any = None  # ssl.SSLContext for STARTTLS; then AUTH needs TLS
    implicit_tls: bool = False  # with tls_context: TLS from the first byte (port 465 style)
    reject: set[str] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)
    auths: list[AuthAttempt] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _sessions: set[SMTP] = field(default_factory=set)

    async def start(self, port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        ssl = self.tls_context if self.implicit_tls else None
        self._server = await loop.create_server(self._protocol, "127.0.0.1", port, ssl=ssl)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        if server is not None:
            await server.wait_closed()

    @property
    def _starttls(self) -> bool:
        return self.tls_context is not None and not self.implicit_tls

    def _protocol(self) -> SMTP:
        relay = self

        class _Tracked(SMTP):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                relay._sessions.add(self)

            def connection_lost(self, error: Exception | None) -> None:
                relay._sessions.discard(self)
                super().connection_lost(error)

        with warnings.catch_warnings():
            # Plain-text AUTH is what the "none" TLS mode tests on loopback.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return self._make(_Tracked)

    def _make(self, cls: type[SMTP]) -> SMTP:
        return cls(
            _RelayHandler(self),
            hostname="relay.test",
            auth_required=True,
            auth_require_tls=self._starttls,
            tls_context=self.tls_context if self._starttls else None,
            require_starttls=self._starttls,
            decode_data=False,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
        )


class _RelayHandler:
    def __init__(self, relay: RelayServer) -> None:
        self.relay = relay

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        try:
            if len(args) > 1:
                raw = base64.b64decode(args[1], validate=True)
            else:
                answer = await server.challenge_auth("", encode_to_b64=False)
                if not isinstance(answer, bytes):
                    return AuthResult(success=False, handled=True)
                raw = answer
            text = raw.decode()
        except (binascii.Error, UnicodeDecodeError):
            await server.push("501 5.5.2 cannot decode XOAUTH2 response")
            return AuthResult(success=False, handled=True)
        fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
        user = fields.get("user", "")
        token = fields.get("auth", "").removeprefix("Bearer ")
        ok = user == self.relay.username and self.relay.tokens.valid(token)
        tls = server._tls_protocol is not None or self.relay.implicit_tls
        self.relay.auths.append(AuthAttempt(user, token, ok, tls))
        if ok:
            return AuthResult(success=True, auth_data=user)
        # Google's way: an error challenge, the client answers with an empty line, then 535.
        error = json.dumps(
            {"status": "400", "schemes": "Bearer", "scope": "https://mail.google.com/"}
        )
        await server.challenge_auth(error)
        await server.push("535 5.7.8 Username and Password not accepted")
        return AuthResult(success=False, handled=True)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.relay.reject:
            return "550 5.1.1 The email account that you tried to reach does not exist"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.relay.received.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                content=bytes(envelope.original_content or b""),
                auth_user=str(session.auth_data),
            )
        )
        return "250 2.0.0 OK queued as test-1"


def xoauth2_relay_env(
    root: Path, port: int, tokens: TokenServer, upstream: RelayServer, issued: Issued, **extra: str
) -> dict[str, str]:
    """A relay that sends through `upstream` with XOAUTH2 tokens from `tokens`."""
    from tests.helpers import base_env, free_port

    env = {
        "ALLOWED_SENDER_DOMAINS": "example.com",
        "RELAYHOST": f"[127.0.0.1]:{upstream.port}",
        "RELAYHOST_USERNAME": USERNAME,
        "POSTFIX_smtp_tls_security_level": "none",
        "XOAUTH2_CLIENT_ID": CLIENT_ID,
        "XOAUTH2_SECRET": CLIENT_SECRET,
        "XOAUTH2_TOKEN_ENDPOINT": tokens.url,
        "XOAUTH2_INITIAL_ACCESS_TOKEN": issued.access_token,
        "XOAUTH2_INITIAL_REFRESH_TOKEN": issued.refresh_token,
        "MAILSTACK_XOAUTH2_PORT": str(free_port()),
    }
    env.update(extra)
    return base_env(root, port, **env)
