"""The web UI's admin pages: domains (with the DNS records to publish), users, aliases and
the mail queue, for users with the admin flag (`mailstack user add --admin`, `user
set-admin`).

Every change goes through the same `MailStore` rules as the CLI and the REST API; a domain
added here gets its DKIM key as one added through the API does, and a queued message is
deleted by root's `postsuper -d` at the worker's request. The admin flag is read from the
datastore at every request, so taking it away takes effect at once. Other users get 403.
Forms post, then redirect to their page (its notice says what was done); a refused change
shows the page again with the reason and what was typed (never a password).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailstack.dkim.keys import KeyUnreadable, published_value
from mailstack.dkim.selectors import SelectorError, signing_key
from mailstack.dns.records import DkimKey, expected_records, zone_data, zone_text
from mailstack.errors import InvalidInput
from mailstack.mailqueue import MailQueue, QueueUnavailable
from mailstack.settings.values import DkimSelectors
from mailstack.store.errors import Conflict, Forbidden, NotFound, StoreUnavailable
from mailstack.web.site import Site
from mailstack.webui.app import Forbidden as Refused
from mailstack.webui.app import Handler, WebUI, guarded
from mailstack.webui.sessions import Session

ADMIN_STYLE = """\
body { max-width: 64rem; }
nav ul { list-style: none; padding: 0; display: flex; gap: 1.2rem; flex-wrap: wrap; }
table { border-collapse: collapse; width: 100%; margin-top: 1rem; }
th, td { border-bottom: 1px solid #ccc; padding: .3rem; text-align: left; vertical-align: top; }
td form { display: inline; }
td button, td input { margin: 0; }
code, pre { word-break: break-all; white-space: pre-wrap; }
a:focus, button:focus, input:focus { outline: 3px solid #05a; }
"""


@dataclass(frozen=True)
class AdminSetup:
    """What the admin pages need beyond the datastore (the worker passes its own)."""

    site: Site = field(default_factory=lambda: Site("localhost"))
    dkim_keys: Path | None = None
    dkim_selectors: DkimSelectors = field(default_factory=DkimSelectors)
    queue: MailQueue = field(default_factory=lambda: MailQueue(None))
    #: asks the supervisor for the new domain's DKIM key, as POST /api/v1/domains does
    on_domain_added: Callable[[], None] | None = None


@dataclass(frozen=True)
class Failure:
    """A change the store refused: the status and the sentence to show."""

    status: int
    message: str


Refusal = InvalidInput | NotFound | Conflict | Forbidden


def refused(exc: Refusal) -> Failure:
    """The form error for a store refusal."""
    if isinstance(exc, InvalidInput):
        return Failure(400, f"{exc.field}: {exc.message}")
    status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 403
    return Failure(status, str(exc))


def checkbox(form: dict[str, str], name: str) -> bool:
    return form.get(name) == "on"


class AdminPages:
    """The handlers; `ui` gives sessions, CSRF checks and templates."""

    def __init__(self, ui: WebUI, setup: AdminSetup) -> None:
        self.ui = ui
        self.store = ui.store
        self.setup = setup

    # -- checks -----------------------------------------------------------------------------

    async def admin_session(self, request: Request) -> Session | Response:
        """The admin's session; a way to the login without one; Refused (403) for others."""
        found = await self.ui.logged_in(request)
        if isinstance(found, Response):
            return found
        _, session = found
        await self.require_admin(session)
        return session

    async def admin_form(self, request: Request) -> tuple[Session, dict[str, str]] | Response:
        """A POST's session and fields, once its CSRF token and the admin flag are checked."""
        checked = await self.ui.checked_form(request)
        if isinstance(checked, Response):
            return checked
        _, session, form = checked
        await self.require_admin(session)
        return session, form

    async def require_admin(self, session: Session) -> None:
        user = await run_in_threadpool(self.store.get_user, session.address)
        if not user.admin:
            raise Refused(f"{session.address} is not an admin")

    def page(
        self, name: str, session: Session, failure: Failure | None = None, **values: Any
    ) -> Response:
        """Page `name` for the admin, with the notice left by the last change, or `failure`
        (the status and the reason a change was refused)."""
        notice, session.notice = session.notice, None
        return self.ui.render(
            name,
            failure.status if failure else 200,
            is_admin=True,
            address=session.address,
            csrf=session.csrf,
            notice=notice,
            error=failure.message if failure else None,
            **values,
        )

    async def change(
        self,
        request: Request,
        action: Callable[[Session, dict[str, str]], str],
        show: Callable[[Session, Failure, dict[str, str]], Response],
        back: str,
    ) -> Response:
        """Run `action` (which returns the notice) for a checked admin form; on a store
        refusal show the page again with `show`, else redirect to `back`."""
        checked = await self.admin_form(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        try:
            session.notice = await run_in_threadpool(action, session, form)
        except (InvalidInput, NotFound, Conflict, Forbidden) as exc:
            return await run_in_threadpool(show, session, refused(exc), form)
        except QueueUnavailable as exc:  # the database's own outage stays a plain 503
            return await run_in_threadpool(show, session, Failure(503, str(exc)), form)
        return RedirectResponse(back, status_code=303)

    def viewer(self, page: Callable[[Session], Response]) -> Handler:
        """A GET handler: the admin's session checked, then `page` (it reads the store)."""

        async def view(request: Request) -> Response:
            found = await self.admin_session(request)
            if isinstance(found, Response):
                return found
            return await run_in_threadpool(page, found)

        return view

    # -- domains ----------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        found = await self.admin_session(request)
        if isinstance(found, Response):
            return found
        return RedirectResponse("/admin/domains", status_code=303)

    def dkim_record(self, domain: str) -> tuple[str, str | None]:
        """The signing selector and its TXT value (None: no key yet)."""
        selector = self.setup.dkim_selectors.for_domain(domain)
        if self.setup.dkim_keys is None:
            return selector, None
        try:
            signing = signing_key(self.setup.dkim_keys, domain, selector)
            return signing.selector, published_value(signing.private_key, domain)
        except SelectorError as exc:
            raise StoreUnavailable(f"cannot read the DKIM selectors of {domain}: {exc}") from None
        except KeyUnreadable as exc:
            raise StoreUnavailable(str(exc)) from None

    def domains_page(
        self, session: Session, failure: Failure | None = None, form: dict[str, str] | None = None
    ) -> Response:
        domains = [(domain, *self.dkim_record(domain.name)) for domain in self.store.list_domains()]
        return self.page(
            "admin_domains.html",
            session,
            failure,
            domains=domains,
            typed=form or {},
        )

    def add_domain_action(self, session: Session, form: dict[str, str]) -> str:
        info = self.store.add_domain(form.get("name", ""))
        if self.setup.on_domain_added is not None:
            self.setup.on_domain_added()  # its DKIM key, made by root within seconds
        return f"Domain {info.name} added; its DKIM key is made within seconds."

    async def add_domain(self, request: Request) -> Response:
        return await self.change(
            request, self.add_domain_action, self.domains_page, "/admin/domains"
        )

    def remove_domain_action(self, session: Session, form: dict[str, str]) -> str:
        name = form.get("name", "")
        self.store.remove_domain(name, cascade=checkbox(form, "cascade"))
        return f"Domain {name} removed."

    async def remove_domain(self, request: Request) -> Response:
        return await self.change(
            request, self.remove_domain_action, self.domains_page, "/admin/domains"
        )

    def domain_page(self, session: Session, name: str) -> Response:
        hosted = {domain.name: domain for domain in self.store.list_domains()}
        if name not in hosted:
            missing = Failure(404, f"There is no domain {name} here.")
            return self.page("admin_missing.html", session, missing)
        site = self.setup.site
        selector, value = self.dkim_record(name)
        keys = [] if value is None else [DkimKey(selector, value)]
        records = expected_records(name, site.hostname, site.client_ports, keys, site.mta_sts_mode)
        return self.page(
            "admin_domain.html",
            session,
            domain=hosted[name],
            selector=selector,
            records=[(record, zone_data(record)) for record in records],
            has_key=bool(keys),
            zone=zone_text(name, site.hostname, records, site.mta_sts_mode),
        )

    async def domain(self, request: Request) -> Response:
        name = str(request.path_params["name"]).lower()
        return await self.viewer(lambda session: self.domain_page(session, name))(request)

    # -- users ------------------------------------------------------------------------------

    def users_page(
        self, session: Session, failure: Failure | None = None, form: dict[str, str] | None = None
    ) -> Response:
        return self.page(
            "admin_users.html",
            session,
            failure,
            users=self.store.list_users(),
            domains=[domain.name for domain in self.store.list_domains()],
            typed=form or {},
        )

    @staticmethod
    def new_password(form: dict[str, str]) -> str:
        password = form.get("password", "")
        if password != form.get("again", ""):
            raise InvalidInput("password", "the two passwords differ")
        return password

    def add_user_action(self, session: Session, form: dict[str, str]) -> str:
        info = self.store.add_user(
            form.get("address", ""),
            self.new_password(form),
            quota=form.get("quota", "").strip() or None,
            admin=checkbox(form, "admin"),
        )
        return f"User {info.address} added{' as an admin' if info.admin else ''}."

    async def add_user(self, request: Request) -> Response:
        return await self.change(request, self.add_user_action, self.users_page, "/admin/users")

    def password_action(self, session: Session, form: dict[str, str]) -> str:
        address = form.get("address", "")
        self.store.set_password(address, self.new_password(form))
        user = self.store.get_user(address)
        if user.address != session.address:  # the old password's sessions end
            self.ui.sessions.end_others(user.address, "")
        return f"Password of {user.address} set."

    async def set_password(self, request: Request) -> Response:
        return await self.change(request, self.password_action, self.users_page, "/admin/users")

    @staticmethod
    def not_self(session: Session, address: str, what: str) -> None:
        if address.strip().lower() == session.address:
            raise Conflict(f"you cannot {what} yourself here; another admin or the CLI can")

    def admin_flag_action(self, session: Session, form: dict[str, str]) -> str:
        address, admin = form.get("address", ""), checkbox(form, "admin")
        if not admin:
            self.not_self(session, address, "take the admin flag from")
        user = self.store.set_admin(address, admin)
        return f"{user.address} is {'now' if user.admin else 'no longer'} an admin."

    async def set_admin(self, request: Request) -> Response:
        return await self.change(request, self.admin_flag_action, self.users_page, "/admin/users")

    def remove_user_action(self, session: Session, form: dict[str, str]) -> str:
        address = form.get("address", "")
        self.not_self(session, address, "remove")
        self.store.remove_user(address)
        return f"User {address} removed (the mail on disk is kept)."

    async def remove_user(self, request: Request) -> Response:
        return await self.change(request, self.remove_user_action, self.users_page, "/admin/users")

    # -- aliases ----------------------------------------------------------------------------

    def aliases_page(
        self, session: Session, failure: Failure | None = None, form: dict[str, str] | None = None
    ) -> Response:
        return self.page(
            "admin_aliases.html",
            session,
            failure,
            aliases=self.store.list_aliases(),
            typed=form or {},
        )

    def add_alias_action(self, session: Session, form: dict[str, str]) -> str:
        targets = form.get("targets", "").replace(",", " ").split()
        info = self.store.add_alias(form.get("source", ""), targets)
        return f"Alias {info.source} delivers to {', '.join(info.targets)}."

    async def add_alias(self, request: Request) -> Response:
        return await self.change(
            request, self.add_alias_action, self.aliases_page, "/admin/aliases"
        )

    def remove_alias_action(self, session: Session, form: dict[str, str]) -> str:
        source = form.get("source", "")
        self.store.remove_alias(source)
        return f"Alias {source} removed."

    async def remove_alias(self, request: Request) -> Response:
        return await self.change(
            request, self.remove_alias_action, self.aliases_page, "/admin/aliases"
        )

    # -- the mail queue ---------------------------------------------------------------------

    def queue_page(
        self, session: Session, failure: Failure | None = None, form: dict[str, str] | None = None
    ) -> Response:
        try:
            messages = self.setup.queue.messages()
        except QueueUnavailable as exc:
            messages, failure = [], Failure(503, f"The queue cannot be read now: {exc}")
        rows = [
            (message, datetime.fromtimestamp(message.arrival_time, UTC).isoformat())
            for message in messages
        ]
        return self.page("admin_queue.html", session, failure, messages=rows)

    def flush_action(self, session: Session, form: dict[str, str]) -> str:
        self.setup.queue.flush()
        return "Every queued message is being tried now."

    async def flush(self, request: Request) -> Response:
        return await self.change(request, self.flush_action, self.queue_page, "/admin/queue")

    def delete_action(self, session: Session, form: dict[str, str]) -> str:
        queue_id = form.get("queue_id", "")
        self.setup.queue.delete(queue_id)
        return f"Message {queue_id} is deleted within seconds (no bounce is sent)."

    async def delete(self, request: Request) -> Response:
        return await self.change(request, self.delete_action, self.queue_page, "/admin/queue")

    async def style(self, request: Request) -> Response:
        return Response(ADMIN_STYLE, media_type="text/css")


def admin_routes(ui: WebUI, setup: AdminSetup) -> list[Route]:
    """The admin pages' routes, each behind the UI's origin check and headers."""
    pages = AdminPages(ui, setup)
    get, post = ["GET"], ["POST"]
    table: list[tuple[str, Handler, list[str]]] = [
        ("/admin", pages.index, get),
        ("/admin/style.css", pages.style, get),
        ("/admin/domains", pages.viewer(pages.domains_page), get),
        ("/admin/domains/add", pages.add_domain, post),
        ("/admin/domains/remove", pages.remove_domain, post),
        ("/admin/domains/{name}", pages.domain, get),
        ("/admin/users", pages.viewer(pages.users_page), get),
        ("/admin/users/add", pages.add_user, post),
        ("/admin/users/password", pages.set_password, post),
        ("/admin/users/admin", pages.set_admin, post),
        ("/admin/users/remove", pages.remove_user, post),
        ("/admin/aliases", pages.viewer(pages.aliases_page), get),
        ("/admin/aliases/add", pages.add_alias, post),
        ("/admin/aliases/remove", pages.remove_alias, post),
        ("/admin/queue", pages.viewer(pages.queue_page), get),
        ("/admin/queue/flush", pages.flush, post),
        ("/admin/queue/delete", pages.delete, post),
    ]
    return [Route(path, guarded(handler), methods=methods) for path, handler, methods in table]
