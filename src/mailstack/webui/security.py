"""The web UI's security pages: app passwords, the TOTP second factor, and the login's
second step.

A login of an account with TOTP on stops after the right password: the browser gets a short
cookie naming a pending login (5 minutes, kept in memory like sessions) and a form for the
code. A code is accepted once (`AccountSecurity.check_totp` keeps its time step), and wrong
codes count as failed logins in the same throttle as wrong passwords. Creating an app
password and turning TOTP off ask for the current password again (plus a code, to turn it
off), so a session cookie alone cannot mint a lasting mail credential or drop the factor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailstack import totp
from mailstack.errors import InvalidInput
from mailstack.store.errors import Conflict, NotFound
from mailstack.store.security import AccountSecurity
from mailstack.webui.sessions import Session, new_token, same_token

if TYPE_CHECKING:
    from mailstack.webui.app import WebUI

log = logging.getLogger("mailstack.webui")

PENDING_COOKIE = "__Host-mailstack-totp"  # names a login waiting for its code
PENDING_TTL = 300.0  # seconds to type the code
PENDING_TRIES = 5  # wrong codes before the password must be typed again
MAX_PENDING = 10_000

Handler = Callable[[Request], Awaitable[Response]]
Form = dict[str, str]
#: a POST of a logged-in user whose CSRF token was checked: the session id, session, form
FormHandler = Callable[[Request, str, Session, Form], Awaitable[Response]]


@dataclass
class Pending:
    address: str
    csrf: str
    started: float
    tries: int = 0


@dataclass
class PendingLogins:
    """Logins whose password was right and whose TOTP code is awaited."""

    ttl: float = PENDING_TTL
    clock: Callable[[], float] = time.monotonic
    _pending: dict[str, Pending] = field(default_factory=dict)

    def start(self, address: str) -> tuple[str, Pending]:
        token = new_token()
        pending = Pending(address, new_token(), self.clock())
        self._pending[token] = pending
        while len(self._pending) > MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        return token, pending

    def get(self, token: str | None) -> Pending | None:
        pending = self._pending.get(token) if token else None
        if pending is not None and self.clock() - pending.started > self.ttl:
            self.end(token)
            return None
        return pending

    def end(self, token: str | None) -> None:
        if token:
            self._pending.pop(token, None)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class SecurityPages:
    def __init__(self, ui: WebUI) -> None:
        self.ui = ui
        self.security = AccountSecurity(ui.store)
        self.pending = PendingLogins()

    # -- the login's second step ------------------------------------------------------------

    async def challenge(self, request: Request, account: str) -> Response | None:
        """After the right password: the code form when the account has TOTP on."""
        if not await run_in_threadpool(self.security.totp_enabled, account):
            return None
        token, pending = self.pending.start(account)
        response = self.code_page(pending)
        response.headers.append("set-cookie", self.ui_cookie(PENDING_COOKIE, token))
        return response

    def code_page(self, pending: Pending, status: int = 200, error: str | None = None) -> Response:
        return self.ui.render("totp_login.html", status, csrf=pending.csrf, error=error)

    @staticmethod
    def ui_cookie(name: str, value: str) -> str:
        from mailstack.webui.app import cookie

        return cookie(name, value)

    async def login_code(self, request: Request) -> Response:
        from mailstack.webui.app import Forbidden, expired_cookie, read_form

        token = request.cookies.get(PENDING_COOKIE)
        pending = self.pending.get(token)
        if pending is None:  # expired or unknown: start again with the password
            response = RedirectResponse("/", status_code=303)
            response.headers.append("set-cookie", expired_cookie(PENDING_COOKIE))
            return response
        form = await read_form(request)
        if not same_token(form.get("csrf"), pending.csrf):
            raise Forbidden("code form without its token")
        client = _client(request)
        if wait := self.ui.throttle.delay(client, pending.address):
            await asyncio.sleep(wait)
        code = form.get("code", "")[:32]
        if await run_in_threadpool(self.security.check_totp, pending.address, code):
            self.pending.end(token)
            started = self.ui.start_session(request, pending.address)
            started.headers.append("set-cookie", expired_cookie(PENDING_COOKIE))
            return started
        self.ui.throttle.failed(client, pending.address)
        pending.tries += 1
        log.info("web UI: wrong TOTP code for %s from %s", pending.address, client)
        if pending.tries >= PENDING_TRIES:
            self.pending.end(token)
            return self.ui.login_page(401, "Too many wrong codes; log in again.")
        return self.code_page(pending, 401, "Wrong or already used code.")

    # -- the security page ------------------------------------------------------------------

    def page(self, session: Session, status: int = 200, **extra: Any) -> Response:
        notice, session.notice = session.notice, None
        address = session.address
        secret = self.security.pending_totp_secret(address)
        uri = totp.provisioning_uri(secret, address) if secret else None
        return self.ui.render(
            "security.html",
            status,
            address=address,
            csrf=session.csrf,
            notice=notice,
            app_passwords=self.security.list_app_passwords(address),
            totp_on=self.security.totp_enabled(address),
            totp_secret=secret,
            totp_uri=uri,
            totp_qr=totp.qr_svg(uri) if uri else None,
            **extra,
        )

    async def show(self, request: Request) -> Response:
        found = await self.ui.logged_in(request)
        if isinstance(found, Response):
            return found
        return await run_in_threadpool(self.page, found[1])

    async def error(self, session: Session, message: str, status: int = 400) -> Response:
        return await run_in_threadpool(self.page, session, status, error=message)

    async def right_password(self, request: Request, session: Session, password: str) -> bool:
        """The current password, checked under the login throttle."""
        client = _client(request)
        if wait := self.ui.throttle.delay(client, session.address):
            await asyncio.sleep(wait)
        if await run_in_threadpool(self.ui.store.verify_password, session.address, password):
            return True
        self.ui.throttle.failed(client, session.address)
        return False

    async def right_code(
        self, request: Request, check: Callable[[str, str], bool], code: str, address: str
    ) -> bool:
        client = _client(request)
        if wait := self.ui.throttle.delay(client, address):
            await asyncio.sleep(wait)
        if await run_in_threadpool(check, address, code):
            return True
        self.ui.throttle.failed(client, address)
        return False

    async def add_app_password(
        self, request: Request, _: str, session: Session, form: Form
    ) -> Response:
        if not await self.right_password(request, session, form.get("current", "")):
            return await self.error(session, "The current password is wrong.")
        try:
            info, secret = await run_in_threadpool(
                self.security.add_app_password, session.address, form.get("name", "").strip()
            )
        except InvalidInput as exc:
            return await self.error(session, f"The name {exc.message}.")
        except Conflict as exc:
            return await self.error(session, f"{exc}.")
        log.info("web UI: %s made app password %s", session.address, info.name)
        # shown in this answer only (no-store); never kept in the session
        return await run_in_threadpool(self.page, session, created=info.name, secret=secret)

    async def remove_app_password(
        self, request: Request, _: str, session: Session, form: Form
    ) -> Response:
        name = form.get("name", "")
        try:
            await run_in_threadpool(self.security.remove_app_password, session.address, name)
        except (InvalidInput, NotFound):
            return await self.error(session, "There is no such app password.", 404)
        log.info("web UI: %s revoked app password %s", session.address, name)
        session.notice = f"App password {name} was revoked."
        return RedirectResponse("/account/security", status_code=303)

    async def totp_setup(self, request: Request, _: str, session: Session, __: Form) -> Response:
        try:
            await run_in_threadpool(self.security.begin_totp, session.address)
        except Conflict:
            return await self.error(session, "Two-factor login is already on.")
        return RedirectResponse("/account/security#totp", status_code=303)

    async def totp_enable(
        self, request: Request, sid: str, session: Session, form: Form
    ) -> Response:
        code = form.get("code", "")[:32]
        if not await self.right_code(request, self.security.confirm_totp, code, session.address):
            return await self.error(session, "Wrong code; try the one your app shows now.")
        self.ui.sessions.end_others(session.address, sid)
        log.info("web UI: %s turned TOTP on", session.address)
        session.notice = "Two-factor login is on."
        return RedirectResponse("/account/security", status_code=303)

    async def totp_disable(
        self, request: Request, _: str, session: Session, form: Form
    ) -> Response:
        if not await self.right_password(request, session, form.get("current", "")):
            return await self.error(session, "The current password is wrong.")
        code = form.get("code", "")[:32]
        if not await self.right_code(request, self.security.disable_totp, code, session.address):
            return await self.error(session, "Wrong or already used code.")
        log.info("web UI: %s turned TOTP off", session.address)
        session.notice = "Two-factor login is off."
        return RedirectResponse("/account/security", status_code=303)


def _posted(ui: WebUI, handler: FormHandler) -> Handler:
    """`handler` behind the session and CSRF checks every logged-in form goes through."""

    async def handle(request: Request) -> Response:
        checked = await ui.checked_form(request)
        if isinstance(checked, Response):
            return checked
        return await handler(request, *checked)

    return handle


def install(ui: WebUI) -> list[tuple[str, str, Handler]]:
    """Hook the login's second step into `ui`; the routes (path, method, handler) to add."""
    pages = SecurityPages(ui)
    ui.second_factor = pages.challenge
    return [
        ("/login/totp", "POST", pages.login_code),
        ("/account/security", "GET", pages.show),
        ("/account/app-passwords", "POST", _posted(ui, pages.add_app_password)),
        ("/account/app-passwords/remove", "POST", _posted(ui, pages.remove_app_password)),
        ("/account/totp/setup", "POST", _posted(ui, pages.totp_setup)),
        ("/account/totp/enable", "POST", _posted(ui, pages.totp_enable)),
        ("/account/totp/disable", "POST", _posted(ui, pages.totp_disable)),
    ]
