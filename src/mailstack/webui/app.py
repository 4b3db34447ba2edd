"""The web UI's Starlette app: pages, forms and the checks every request goes through.

Forms are plain `application/x-www-form-urlencoded` POSTs. Each one carries a CSRF token: the
session's own once logged in, and for the login form a random value also set in a short
cookie (double submit). POSTs whose Origin or Sec-Fetch-Site say they come from another site
are refused before any of that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from mailstack.errors import InvalidInput
from mailstack.names import try_address
from mailstack.store.errors import NotFound, StoreUnavailable
from mailstack.store.service import MailStore
from mailstack.throttle import LoginThrottle
from mailstack.web.site import Site
from mailstack.webui import security
from mailstack.webui.apple import apple_routes
from mailstack.webui.deliveries import delivery_routes
from mailstack.webui.rules import sieve_routes
from mailstack.webui.sessions import Session, Sessions, new_token, same_token

if TYPE_CHECKING:
    from mailstack.webui.admin import AdminSetup

log = logging.getLogger("mailstack.webui")

SESSION_COOKIE = "__Host-mailstack-session"
LOGIN_COOKIE = "__Host-mailstack-login"  # the login form's CSRF token
MAX_FORM = 16 * 1024  # bytes of a form body
RETRY_AFTER = 30  # seconds, while the database is unreachable

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

STYLE = """\
body { font-family: sans-serif; max-width: 36rem; margin: 2rem auto; padding: 0 1rem; }
label { display: block; margin-top: .8rem; }
input[type=text], input[type=email], input[type=password] { width: 100%; padding: .3rem; }
button { margin-top: 1rem; padding: .4rem 1rem; }
fieldset { margin-top: 1.5rem; }
.error { color: #a00; font-weight: bold; }
.notice { color: #060; font-weight: bold; }
header { display: flex; justify-content: space-between; align-items: baseline; }
textarea { width: 100%; font-family: monospace; }
form.inline { display: inline; } form.inline button { margin-top: .2rem; }
.wide { overflow-x: auto; width: 94vw; max-width: 72rem; position: relative; left: 50%;
  transform: translateX(-50%); }
td, th { padding: .2rem .4rem; text-align: left; vertical-align: top; }
"""

Handler = Callable[[Request], Awaitable[Response]]


class Forbidden(Exception):
    """A POST that fails the CSRF or origin check."""


class TooLarge(Exception):
    """A form body over MAX_FORM."""


def cookie(name: str, value: str) -> str:
    return f"{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict"


def expired_cookie(name: str) -> str:
    return f"{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict"


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site.

    Referrer-Policy no-referrer makes browsers send `Origin: null` with our own forms; that
    passes only when Sec-Fetch-Site vouches for it."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return site == "same-origin"
    parts = urlsplit(origin)
    return parts.scheme == "https" and parts.netloc == request.headers.get("host")


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body's fields (the first value of each); TooLarge beyond MAX_FORM."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise TooLarge
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


class WebUI:
    def __init__(self, store: MailStore, throttle: LoginThrottle, sessions: Sessions) -> None:
        self.store = store
        self.throttle = throttle
        self.sessions = sessions
        #: after a right password: a response asking for more (a TOTP code), or None
        self.second_factor: Callable[[Request, str], Awaitable[Response | None]] | None = None
        self.templates = Environment(
            loader=PackageLoader("mailstack.webui", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            auto_reload=False,
        )

    # -- helpers ----------------------------------------------------------------------------

    def render(self, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        page = self.templates.get_template(name).render(**values)
        return HTMLResponse(page, status_code=status)

    def session(self, request: Request) -> tuple[str | None, Session | None]:
        sid = request.cookies.get(SESSION_COOKIE)
        return sid, self.sessions.get(sid)

    def login_page(
        self, status: int = 200, error: str | None = None, address: str = ""
    ) -> Response:
        token = new_token()
        response = self.render("login.html", status, csrf=token, error=error, address=address)
        response.headers.append("set-cookie", cookie(LOGIN_COOKIE, token))
        return response

    def account_page(
        self, session: Session, status: int = 200, error: str | None = None
    ) -> HTMLResponse:
        notice, session.notice = session.notice, None
        spam = self.store.spam_settings(session.address)
        return self.render(
            "account.html",
            status,
            is_admin=self.store.get_user(session.address).admin,
            address=session.address,
            csrf=session.csrf,
            spam=spam,
            notice=notice,
            error=error,
        )

    @staticmethod
    def to_login() -> Response:
        response = RedirectResponse("/", status_code=303)
        response.headers.append("set-cookie", expired_cookie(SESSION_COOKIE))
        return response

    async def logged_in(self, request: Request) -> tuple[str, Session] | Response:
        """The request's live session whose user still may log in; else a way to the login."""
        sid, session = self.session(request)
        if sid is None or session is None:
            return self.to_login()
        try:
            user = await run_in_threadpool(self.store.get_user, session.address)
        except NotFound:
            user = None
        if user is None or not user.enabled:
            self.sessions.end(sid)
            return self.to_login()
        return sid, session

    # -- pages ------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        _, session = self.session(request)
        if session is not None:
            return RedirectResponse("/account", status_code=303)
        return self.login_page()

    async def login(self, request: Request) -> Response:
        form = await read_form(request)
        if not same_token(form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")):
            raise Forbidden("login without the form's token")
        typed = form.get("address", "")[:320]
        password = form.get("password", "")
        account = try_address(typed)
        client = request.client.host if request.client else "unknown"
        wait = self.throttle.delay(client, account)
        if wait:  # earlier failures from this address or for this account slow it down
            await asyncio.sleep(wait)
        # an unknown user is checked too (against a dummy hash): same cost, same answer
        valid = await run_in_threadpool(self.store.verify_password, account or "", password)
        if not valid or account is None:
            self.throttle.failed(client, account)
            log.info("web UI: login failed for %r from %s", typed[:100], client)
            return self.login_page(401, "Wrong address or password.", typed)
        if self.second_factor is not None:  # TOTP on: the code comes next (webui/security.py)
            challenge = await self.second_factor(request, account)
            if challenge is not None:
                return challenge
        return self.start_session(request, account)

    def start_session(self, request: Request, account: str) -> Response:
        """Log `account` in: a new session, its cookie, and on to the account page."""
        client = request.client.host if request.client else "unknown"
        self.sessions.end(request.cookies.get(SESSION_COOKIE))
        sid, _ = self.sessions.start(account)
        log.info("web UI: %s logged in from %s", account, client)
        response = RedirectResponse("/account", status_code=303)
        response.headers.append("set-cookie", cookie(SESSION_COOKIE, sid))
        response.headers.append("set-cookie", expired_cookie(LOGIN_COOKIE))
        return response

    async def account(self, request: Request) -> Response:
        found = await self.logged_in(request)
        if isinstance(found, Response):
            return found
        _, session = found
        return await run_in_threadpool(self.account_page, session)

    async def checked_form(
        self, request: Request
    ) -> tuple[str, Session, dict[str, str]] | Response:
        found = await self.logged_in(request)
        if isinstance(found, Response):
            return found
        sid, session = found
        form = await read_form(request)
        if not same_token(form.get("csrf"), session.csrf):
            raise Forbidden("form without the session's token")
        return sid, session, form

    async def password(self, request: Request) -> Response:
        checked = await self.checked_form(request)
        if isinstance(checked, Response):
            return checked
        sid, session, form = checked
        client = request.client.host if request.client else "unknown"
        wait = self.throttle.delay(client, session.address)
        if wait:
            await asyncio.sleep(wait)
        current = form.get("current", "")
        if not await run_in_threadpool(self.store.verify_password, session.address, current):
            self.throttle.failed(client, session.address)
            return await self.account_error(session, "The current password is wrong.")
        new, again = form.get("new", ""), form.get("again", "")
        if new != again:
            return await self.account_error(session, "The new passwords differ.")
        try:
            await run_in_threadpool(self.store.set_password, session.address, new)
        except InvalidInput as exc:
            return await self.account_error(session, f"The new password {exc.message}.")
        self.sessions.end_others(session.address, sid)
        log.info("web UI: %s changed their password", session.address)
        session.notice = "Your password was changed."
        return RedirectResponse("/account", status_code=303)

    async def spam(self, request: Request) -> Response:
        checked = await self.checked_form(request)
        if isinstance(checked, Response):
            return checked
        _, session, form = checked
        text = form.get("threshold", "").strip()
        threshold: int | None = None
        if text:
            if not text.isascii() or not text.isdigit():
                return await self.account_error(session, "The threshold must be a whole number.")
            threshold = int(text[:9])
        enabled = form.get("filter") == "on"
        try:
            await run_in_threadpool(
                self.store.set_spam, session.address, threshold=threshold, enabled=enabled
            )
        except InvalidInput as exc:
            return await self.account_error(session, f"The threshold {exc.message}.")
        session.notice = "Your spam settings were saved."
        return RedirectResponse("/account", status_code=303)

    async def account_error(self, session: Session, error: str) -> Response:
        return await run_in_threadpool(self.account_page, session, 400, error)

    async def logout(self, request: Request) -> Response:
        checked = await self.checked_form(request)
        if isinstance(checked, Response):
            return checked
        sid, session, _ = checked
        self.sessions.end(sid)
        log.info("web UI: %s logged out", session.address)
        return self.to_login()

    async def style(self, request: Request) -> Response:
        return Response(STYLE, media_type="text/css")


def guarded(handler: Handler) -> Handler:
    """`handler` behind the origin check (POSTs), Forbidden as 403, and the headers."""

    async def checked(request: Request) -> Response:
        try:
            if request.method == "POST" and not _same_origin(request):
                raise Forbidden("cross-site POST")
            response = await handler(request)
        except Forbidden as exc:
            log.info("web UI: refused %s %s: %s", request.method, request.url.path, exc)
            response = PlainTextResponse("forbidden\n", status_code=403)
        except TooLarge:
            response = PlainTextResponse("form too large\n", status_code=413)
        except StoreUnavailable as exc:
            log.warning("web UI: %s %s: %s", request.method, request.url.path, exc)
            response = PlainTextResponse(
                "The mail service cannot reach its database; try again in a minute.\n",
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        return _with_headers(response)

    return checked


def _with_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 of the UI's paths, with the same headers as its pages."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return _with_headers(PlainTextResponse(f"{status}\n", status_code=status))


def create_webui(
    engine: Engine,
    *,
    throttle: LoginThrottle | None = None,
    sessions: Sessions | None = None,
    admin: AdminSetup | None = None,
    site: Site | None = None,
    deliveries: Path | None = None,
) -> Starlette:
    """The web UI over the datastore at `engine`, to mount at `/`; `admin` is what its
    admin pages need (mailstack.webui.admin), `site` (the server's name and client ports)
    for the Apple profile, `deliveries` the delivery log's folder."""
    from mailstack.webui.admin import AdminSetup, admin_routes

    ui = WebUI(MailStore(engine), throttle or LoginThrottle(), sessions or Sessions())
    routes = [
        Route("/", guarded(ui.index), methods=["GET"]),
        Route("/login", guarded(ui.login), methods=["POST"]),
        Route("/account", guarded(ui.account), methods=["GET"]),
        Route("/account/password", guarded(ui.password), methods=["POST"]),
        Route("/account/spam", guarded(ui.spam), methods=["POST"]),
        Route("/logout", guarded(ui.logout), methods=["POST"]),
        Route("/style.css", guarded(ui.style), methods=["GET"]),
        *admin_routes(ui, admin or AdminSetup()),
        *sieve_routes(ui, guarded),
        *delivery_routes(ui, guarded, deliveries),
        *(apple_routes(ui, guarded, site) if site is not None else []),
    ]
    ui.templates.globals["apple_profile"] = site is not None
    routes += [Route(path, guarded(h), methods=[m]) for path, m, h in security.install(ui)]
    return Starlette(routes=routes, exception_handlers={404: _http_error, 405: _http_error})
