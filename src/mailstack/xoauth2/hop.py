"""The pass-through SMTP hop: aiosmtpd facing Postfix, aiosmtplib facing the relay host.

Every command is answered only after the relay host answered it: MAIL gets the relay's
MAIL reply, each RCPT the relay's reply for that recipient, DATA the relay's final reply.
Nothing is stored here, so nothing is accepted that the relay host has not accepted, and
the queue stays Postfix's. Whatever goes wrong on our side (token, TLS, network) becomes
a 4xx and Postfix tries again later.

The upstream connection belongs to the client's SMTP session: Postfix's connection cache
sends several transactions over one session, and they reuse one authenticated upstream
connection (one AUTH per session instead of per message). If a reused connection turns
out to be dead at MAIL, the hop reconnects once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import logging.handlers
from typing import Any

import httpx
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailstack.xoauth2.config import HopConfig
from mailstack.xoauth2.errors import XOAuth2Error
from mailstack.xoauth2.refresh import TokenEndpoint, TokenManager
from mailstack.xoauth2.replies import (
    INTERNAL_ERROR,
    NO_TRANSACTION,
    RELAY_LOST,
    Deferral,
    Reply,
)
from mailstack.xoauth2.tokens import TokenStore
from mailstack.xoauth2.trace import Redactor, Trace
from mailstack.xoauth2.upstream import Upstream, UpstreamLost, UpstreamTarget

log = logging.getLogger(__name__)

_HTTP_TIMEOUT = httpx.Timeout(20.0, connect=10.0)
_STOP_GRACE = 5.0


class _Session(SMTP):
    """aiosmtpd's protocol, holding this client session's upstream connection."""

    def __init__(self, hop: XOAuth2Hop, **kwargs: Any) -> None:
        super().__init__(hop._handler, **kwargs)
        self.hop = hop
        self.upstream: Upstream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.hop._sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.hop._sessions.discard(self)
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            self.hop._close_later(upstream)


class _Handler:
    """aiosmtpd hooks: each one waits for the relay host and answers with its reply."""

    def __init__(self, hop: XOAuth2Hop) -> None:
        self.hop = hop

    async def handle_MAIL(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        try:
            reply = await self._mail(server, session, address, mail_options)
        except Deferral as deferral:
            return self.hop._defer(deferral, "MAIL", address, server)
        if reply.positive:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply.wire()

    async def _mail(
        self, server: _Session, session: Session, address: str, options: list[str]
    ) -> Reply:
        upstream = server.upstream
        if upstream is not None and upstream.ready:
            await upstream.rset()
            with contextlib.suppress(UpstreamLost):
                return await upstream.mail(address, options)
        # First transaction of the session, or the cached connection died: connect anew.
        if upstream is not None:
            await upstream.close()
        upstream = server.upstream = self.hop._new_upstream(session.host_name)
        await upstream.open()
        try:
            return await upstream.mail(address, options)
        except UpstreamLost as exc:
            raise Deferral(RELAY_LOST, f"relay host dropped the connection {exc}") from None

    async def handle_RCPT(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        upstream = server.upstream
        if upstream is None or not upstream.in_transaction:
            return NO_TRANSACTION.wire()
        try:
            reply = await upstream.rcpt(address, rcpt_options)
        except UpstreamLost as exc:
            deferral = Deferral(RELAY_LOST, f"relay host dropped the connection {exc}")
            return self.hop._defer(deferral, "RCPT", envelope.mail_from, server)
        if reply.positive:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply.wire()

    async def handle_DATA(self, server: _Session, session: Session, envelope: Envelope) -> str:
        upstream = server.upstream
        if upstream is None or not upstream.in_transaction:
            return NO_TRANSACTION.wire()
        content = envelope.original_content or b""
        try:
            reply = await upstream.data(content)
        except UpstreamLost as exc:
            deferral = Deferral(RELAY_LOST, f"relay host dropped the connection {exc}")
            return self.hop._defer(deferral, "DATA", envelope.mail_from, server)
        log.info(
            "xoauth2 relayed from=<%s> to %d recipient(s) via %s: %s",
            _bare(envelope.mail_from),
            len(envelope.rcpt_tos),
            self.hop.config.upstream_host,
            self.hop.redact(f"{reply.code} {reply.text.splitlines()[0] if reply.text else ''}"),
        )
        return reply.wire()

    async def handle_RSET(self, server: _Session, session: Session, envelope: Envelope) -> str:
        if server.upstream is not None:
            await server.upstream.rset()
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: _Session, session: Session, envelope: Envelope) -> str:
        upstream, server.upstream = server.upstream, None
        if upstream is not None:
            await upstream.close()
        return "221 2.0.0 Bye"

    async def handle_exception(self, error: Exception) -> str:
        """Never echo exception text to the peer (aiosmtpd's default does)."""
        log.error("xoauth2 hop internal error: %s", self.hop.redact(repr(error)))
        return INTERNAL_ERROR.wire()


def _bare(address: str | None) -> str:
    return "" if address in (None, "<>") else str(address)


class XOAuth2Hop:
    """The controller: start() returns once listening; stop() may be called any number of times.

    Postfix is pointed at it with `relayhost = [127.0.0.1]:<port>`; with `client_password`
    set (as `mailstack run` does), Postfix logs in with it, so no other local process can
    send through the hop. It listens on loopback only.
    """

    def __init__(self, config: HopConfig) -> None:
        self.config = config
        self._handler = _Handler(self)
        self._server: asyncio.Server | None = None
        self._http: httpx.AsyncClient | None = None
        self._tokens: TokenManager | None = None
        self._sessions: set[_Session] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._syslog: logging.Handler | None = None
        self._target = UpstreamTarget(
            host=config.upstream_host,
            port=config.upstream_port,
            tls=config.upstream_tls,
            username=config.username,
            timeout=config.upstream_timeout,
            tls_context=config.tls_context(),
        )
        self.redact = Redactor(
            config.client_id,
            config.client_secret,
            *(
                [config.initial_tokens.access_token, config.initial_tokens.refresh_token]
                if config.initial_tokens
                else []
            ),
            dynamic=lambda: self._tokens.secrets() if self._tokens else [],
        )
        self.port = config.listen_port

    @property
    def tokens(self) -> TokenManager:
        if self._tokens is None:
            raise RuntimeError("the hop is not started")
        return self._tokens

    async def start(self) -> None:
        if self._server is not None:
            return
        config = self.config
        self._http = httpx.AsyncClient(timeout=_HTTP_TIMEOUT, follow_redirects=False)
        endpoint = TokenEndpoint(
            config.token_endpoint,
            config.client_id,
            config.client_secret,
            self._http,
            scope=config.scope,
            redact=self.redact,
        )
        self._tokens = TokenManager(
            TokenStore(config.token_file),
            endpoint,
            margin=config.refresh_margin,
            retry_after=config.refresh_retry_after,
            initial=config.initial_tokens.as_tokens() if config.initial_tokens else None,
        )
        self._check_token_file()
        if config.syslog_on_failure:
            self._syslog = _syslog_handler(config.syslog_address)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                self._make_session, config.listen_host, config.listen_port
            )
        except OSError:
            await self.stop()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        if not _is_loopback(config.listen_host):
            log.warning(
                "xoauth2 hop listens on %s: anyone who can reach it sends mail as %s",
                config.listen_host,
                config.username,
            )
        log.info(
            "xoauth2 hop listening on %s:%d, relaying to %s:%d (%s) as %s",
            config.listen_host,
            self.port,
            config.upstream_host,
            config.upstream_port,
            config.upstream_tls,
            config.username,
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await asyncio.sleep(0)  # let connection_lost() run and queue the upstream QUITs
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=_STOP_GRACE)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), _STOP_GRACE)
        if self._tokens is not None:
            await self._tokens.close()
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
        syslog, self._syslog = self._syslog, None
        if syslog is not None:
            syslog.close()

    # -- used by the handler ------------------------------------------------------------

    def _make_session(self) -> _Session:
        password = self.config.client_password
        return _Session(
            self,
            data_size_limit=self.config.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="mailstack xoauth2 hop",
            auth_required=password is not None,
            auth_require_tls=False,  # loopback only, and the password is per start
            auth_exclude_mechanism=["LOGIN"] if password else ["LOGIN", "PLAIN"],
            authenticator=self._authenticate if password else None,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Only Postfix knows the per-start password (sasl_passwd, 0600)."""
        expected = self.config.client_password
        given = data.password.decode() if isinstance(data, LoginPassword) else None
        if expected and given is not None and hmac.compare_digest(given, expected):
            return AuthResult(success=True)
        log.warning("xoauth2 hop: refused a client that is not Postfix")
        return AuthResult(success=False, handled=False)

    def _new_upstream(self, helo_name: str | None) -> Upstream:
        trace = Trace(self.config.full_trace, self.redact)
        name = helo_name if helo_name and " " not in helo_name else self.config.helo_name
        return Upstream(self._target, self.tokens, trace, name)

    def _close_later(self, upstream: Upstream) -> None:
        task = asyncio.get_running_loop().create_task(upstream.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _defer(self, deferral: Deferral, command: str, sender: str | None, server: _Session) -> str:
        """Log the one failure line (and the trace if asked), return the 4xx for Postfix."""
        line = self.redact(
            f"xoauth2 deferred {command} from=<{_bare(sender)}> as {self.config.username}: "
            f"{deferral.reason} -> {deferral.reply.code} {deferral.reply.text}"
        )
        log.warning("%s", line)
        if self._syslog is not None:
            self._syslog.handle(log.makeRecord(log.name, logging.WARNING, "", 0, line, (), None))
        upstream = server.upstream
        if upstream is not None:
            upstream.trace.dump(log, self.config.username)
            if not upstream.ready:
                server.upstream = None
                self._close_later(upstream)
        return deferral.reply.wire()

    def _check_token_file(self) -> None:
        """Seed the token file, and say at start-up (not at the first mail) if it is unusable."""
        try:
            self.tokens.ensure_file()
            self.tokens.store.load()
        except XOAuth2Error as exc:
            log.warning("xoauth2 %s; mail will be deferred until this is fixed", exc)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _syslog_handler(address: str) -> logging.Handler | None:
    """A handler for XOAUTH2_SYSLOG_ON_FAILURE, or None (with a warning) if there is no syslog."""
    try:
        handler = logging.handlers.SysLogHandler(
            address=address,
            facility=logging.handlers.SysLogHandler.LOG_MAIL,
            socktype=None,  # a datagram socket, else a stream (as mailstack's own receiver)
        )
    except OSError as exc:
        log.warning("xoauth2 cannot open syslog at %s: %s", address, exc.strerror)
        return None
    handler.setFormatter(logging.Formatter("mailstack-xoauth2: %(message)s"))
    return handler
