"""The web UI's Sieve pages: filing rules made with a form, and scripts written by hand.

Every change goes through `MailStore.put_script` and friends with sievec as the checker, the
same rules as the API, the CLI and ManageSieve: a script that does not compile is refused
with the compiler's message and nothing is stored. The rule form edits only scripts it made
itself (`mailstack.sieve.rules.parse_rules`); any other script opens in the raw editor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailstack.errors import InvalidInput
from mailstack.sieve.check import SieveCheckUnavailable, check_script
from mailstack.sieve.rules import Rule, make_rule, parse_rules, render_rules
from mailstack.store.errors import Conflict, NotFound
from mailstack.store.service import Checker, ScriptInfo
from mailstack.webui.sessions import Session

if TYPE_CHECKING:
    from mailstack.webui.app import Handler, WebUI

RULES_SCRIPT = "rules"  # the script the rule form writes unless told another


class SievePages:
    """/account/sieve: list, activate and delete scripts; the rule form; the raw editor."""

    def __init__(self, ui: WebUI, checker: Checker = check_script) -> None:
        self.ui = ui
        self.store = ui.store
        self.checker = checker

    # -- reading ----------------------------------------------------------------------------

    def _page(self, template: str, session: Session, status: int, **values: Any) -> Response:
        """`template` for the logged-in user (their address, the forms' CSRF token)."""
        values |= {"address": session.address, "csrf": session.csrf}
        return self.ui.render(template, status, **values)

    def _rules_of(self, address: str, name: str) -> list[Rule] | None:
        """The rules of script `name` (none yet if it does not exist); None when it is
        not one the form made."""
        try:
            script = self.store.get_script(address, name)
        except NotFound:
            return []
        return parse_rules(script.content or "")

    def overview(
        self, session: Session, rules_name: str, status: int = 200, **form: Any
    ) -> Response:
        notice, session.notice = session.notice, None
        scripts = self.store.list_scripts(session.address)
        rules = self._rules_of(session.address, rules_name)
        made_by_form = {s.name for s in scripts if self._is_form_made(session.address, s)}
        return self._page(
            "sieve.html",
            session,
            status,
            notice=notice,
            scripts=scripts,
            made_by_form=made_by_form,
            rules_name=rules_name,
            rules=rules,
            **form,
        )

    def _is_form_made(self, address: str, script: ScriptInfo) -> bool:
        return self._rules_of(address, script.name) is not None

    def editor(
        self, session: Session, name: str, content: str | None, status: int = 200, **form: Any
    ) -> Response:
        active = False
        if content is None:
            try:
                found = self.store.get_script(session.address, name) if name else None
            except NotFound:
                found = None
            content = (found.content or "") if found else ""
            active = bool(found and found.active)
        return self._page(
            "sieve_edit.html",
            session,
            status,
            script_name=name,
            content=content,
            active=active,
            **form,
        )

    # -- pages ------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        found = await self.ui.logged_in(request)
        if isinstance(found, Response):
            return found
        _, session = found
        name = request.query_params.get("rules", RULES_SCRIPT)[:200]
        return await run_in_threadpool(self.overview, session, name)

    async def edit(self, request: Request) -> Response:
        found = await self.ui.logged_in(request)
        if isinstance(found, Response):
            return found
        _, session = found
        name = request.query_params.get("name", "")[:200]
        return await run_in_threadpool(self.editor, session, name, None)

    # -- forms ------------------------------------------------------------------------------

    async def add_rule(self, request: Request) -> Response:
        checked = await self.ui.checked_form(request)
        if isinstance(checked, Response):
            return checked
        _, session, form = checked
        name = form.get("script", RULES_SCRIPT)
        typed = {k: form.get(k, "") for k in ("sender", "subject", "folder")}
        try:
            rule = make_rule(typed["folder"], typed["sender"], typed["subject"])
            done = await run_in_threadpool(self._change_rules, session, name, rule, None)
        except (InvalidInput, Conflict, NotFound, SieveCheckUnavailable) as exc:
            return await self._overview_error(session, name, exc, typed)
        session.notice = done
        return RedirectResponse(f"/account/sieve?rules={quote(name)}", status_code=303)

    async def remove_rule(self, request: Request) -> Response:
        checked = await self.ui.checked_form(request)
        if isinstance(checked, Response):
            return checked
        _, session, form = checked
        name = form.get("script", RULES_SCRIPT)
        number = form.get("rule", "")
        try:
            if not number.isdigit():
                raise InvalidInput("rule", "names no rule")
            done = await run_in_threadpool(self._change_rules, session, name, None, int(number))
        except (InvalidInput, Conflict, NotFound, SieveCheckUnavailable) as exc:
            return await self._overview_error(session, name, exc, {})
        session.notice = done
        return RedirectResponse(f"/account/sieve?rules={quote(name)}", status_code=303)

    def _change_rules(
        self, session: Session, name: str, add: Rule | None, remove: int | None
    ) -> str:
        """Add or remove one rule of the form-made script `name`; the notice to show."""
        address = session.address
        rules = self._rules_of(address, name)
        if rules is None:
            raise Conflict(f"the script {name!r} was written by hand: change it in the editor")
        if remove is not None:
            if not 1 <= remove <= len(rules):
                raise InvalidInput("rule", "names no rule")
            del rules[remove - 1]
        if add is not None:
            rules.append(add)
        active = [s.name for s in self.store.list_scripts(address) if s.active]
        activate = not active or active == [name]
        self.store.put_script(
            address, name, render_rules(rules), activate=activate, checker=self.checker
        )
        if activate:
            return "Your filing rules were saved and are in use."
        return (
            f"Your filing rules were saved in {name!r}; the script {active[0]!r} is the one "
            f"in use: activate {name!r} to use them instead."
        )

    async def save(self, request: Request) -> Response:
        checked = await self.ui.checked_form(request)
        if isinstance(checked, Response):
            return checked
        _, session, form = checked
        name, content = form.get("name", "").strip(), form.get("content", "")
        content = content.replace("\r\n", "\n")  # browsers send CRLF; Sieve takes either
        activate = form.get("activate") == "on"
        try:
            await run_in_threadpool(
                self.store.put_script,
                session.address,
                name,
                content,
                activate=activate,
                checker=self.checker,
            )
        except (InvalidInput, SieveCheckUnavailable) as exc:
            status = 503 if isinstance(exc, SieveCheckUnavailable) else 400
            error = exc.message if isinstance(exc, InvalidInput) else str(exc)
            return await run_in_threadpool(
                self.editor, session, name, content, status, error=error, activate=activate
            )
        session.notice = f"The script {name!r} was saved" + (" and is in use." if activate else ".")
        return RedirectResponse("/account/sieve", status_code=303)

    async def activate(self, request: Request) -> Response:
        def use(address: str, name: str) -> None:
            self.store.activate_script(address, name or None)  # "": none at all

        return await self._on_script(
            request,
            use,
            lambda name: f"The script {name!r} is in use." if name else "No script is in use.",
        )

    async def delete(self, request: Request) -> Response:
        return await self._on_script(
            request, self.store.remove_script, lambda name: f"The script {name!r} was deleted."
        )

    async def _on_script(
        self, request: Request, change: Callable[[str, str], None], notice: Callable[[str], str]
    ) -> Response:
        """`change(address, name)` for the script the form names; back to the list."""
        checked = await self.ui.checked_form(request)
        if isinstance(checked, Response):
            return checked
        _, session, form = checked
        name = form.get("name", "")
        try:
            await run_in_threadpool(change, session.address, name)
        except (NotFound, Conflict) as exc:
            return await self._overview_error(session, RULES_SCRIPT, exc, {})
        session.notice = notice(name)
        return RedirectResponse("/account/sieve", status_code=303)

    async def _overview_error(
        self, session: Session, name: str, exc: Exception, typed: dict[str, str]
    ) -> Response:
        if isinstance(exc, InvalidInput):
            error = f"{exc.field.capitalize()}: {exc.message}."
        else:
            error = str(exc)
        status = 503 if isinstance(exc, SieveCheckUnavailable) else 400
        return await run_in_threadpool(
            self.overview, session, name, status, error=error, typed=typed
        )


def sieve_routes(ui: WebUI, wrap: Callable[[Handler], Handler]) -> list[Route]:
    """The Sieve pages' routes, each behind `wrap` (the UI's origin check and headers)."""
    pages = SievePages(ui)
    return [
        Route("/account/sieve", wrap(pages.page), methods=["GET"]),
        Route("/account/sieve/edit", wrap(pages.edit), methods=["GET"]),
        Route("/account/sieve/rule", wrap(pages.add_rule), methods=["POST"]),
        Route("/account/sieve/rule/remove", wrap(pages.remove_rule), methods=["POST"]),
        Route("/account/sieve/save", wrap(pages.save), methods=["POST"]),
        Route("/account/sieve/activate", wrap(pages.activate), methods=["POST"]),
        Route("/account/sieve/delete", wrap(pages.delete), methods=["POST"]),
    ]
