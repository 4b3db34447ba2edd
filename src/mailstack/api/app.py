"""The admin REST API as an ASGI application, to be mounted at `/api/v1`.

`create_api` builds it around the process's engine; the worker's HTTPS listener mounts it
(any ASGI server can serve it alone too). The interactive docs pages are off: they load
their scripts from a CDN, and nothing here may fetch from the internet at run time; the
OpenAPI document itself is served at `/openapi.json` (under the mount: `/api/v1/openapi.json`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from mailstack.api import problems
from mailstack.api.auth import Caller
from mailstack.api.limits import BodyLimit
from mailstack.api.routes import aliases, app_passwords, deliveries, domains, queue, sieve, users
from mailstack.api.routes import dkim as dkim_routes
from mailstack.api.schemas import CallerOut
from mailstack.dkim.requests import RotationSetup
from mailstack.mailqueue import DeleteRequests, MailQueue
from mailstack.settings.values import DkimSelectors
from mailstack.sieve.check import check_script
from mailstack.store import MailStore

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from mailstack.store.service import Checker

MOUNT_PATH = "/api/v1"
API_VERSION = "1"
DESCRIPTION = """\
Domains, users, aliases, Sieve scripts and DKIM records of a mailstack server, through the
same datastore rules as the `mailstack` admin commands.

Authenticate with `Authorization: Bearer TOKEN`, a token from
`mailstack token create NAME [--user ADDRESS]`. An admin token may do everything; a user
token only its user's password, the aliases delivering to the user, the user's Sieve
scripts, app passwords and the user's recent deliveries. Errors are RFC 9457
`application/problem+json`; a 422 names the field at fault.
"""


def create_api(
    engine: Engine,
    *,
    dkim_keys: Path,
    dkim_selectors: DkimSelectors | None = None,
    sieve_checker: Checker = check_script,
    showq: Path | None = None,
    on_domain_added: Callable[[], None] | None = None,
    queue_deletes: DeleteRequests | None = None,
    delivery_log: Path | None = None,
    dkim_rotation: RotationSetup | None = None,
) -> FastAPI:
    """The API over `engine` (already migrated: the caller opens it with `open_engine`).

    `dkim_keys` is the OpenDKIM key folder (`Paths.dkim_keys`), `dkim_selectors` DKIM_SELECTOR
    as the settings parsed it (default: `mail` for every domain), `sieve_checker` what
    compiles uploaded scripts, `showq` Postfix's `public/showq` socket (the queue listing),
    `on_domain_added` what to do once a domain was added (the worker asks the supervisor
    for its DKIM key), `queue_deletes` how to ask root to delete a queued message,
    `delivery_log` the delivery log's folder (mailstack.deliverylog), `dkim_rotation` how
    to have root rotate DKIM keys (None: those routes answer 503).
    """
    app = ProblemDocumentedApi(
        title="mailstack admin API",
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        servers=[{"url": MOUNT_PATH}],
        root_path_in_servers=False,
        responses=problems.COMMON_RESPONSES,
        generate_unique_id_function=_operation_id,
    )
    app.state.store = MailStore(engine)
    app.state.dkim_keys = dkim_keys
    app.state.dkim_selectors = dkim_selectors or DkimSelectors()
    app.state.sieve_checker = sieve_checker
    app.state.queue = MailQueue(showq.parent if showq else None, queue_deletes)  # None: 503
    app.state.on_domain_added = on_domain_added  # e.g. ask for the new domain's DKIM key
    app.state.delivery_log = delivery_log  # None: /users/{address}/deliveries answers 503
    app.state.dkim_rotation = dkim_rotation
    problems.install(app)
    app.add_middleware(BodyLimit)
    for module in (domains, dkim_routes, users, aliases, sieve, queue, deliveries, app_passwords):
        app.include_router(module.router)
    app.add_api_route("/me", me, methods=["GET"], tags=["tokens"], summary="Who the token is")
    return app


def _operation_id(route: APIRoute) -> str:
    """The function's name (`add_user`), not FastAPI's `add_user_users_post`."""
    return route.name


def me(caller: Caller) -> CallerOut:
    return CallerOut(token=caller.name, user=caller.user, admin=caller.admin)


class ProblemDocumentedApi(FastAPI):
    """FastAPI whose OpenAPI document also has the Problem schema the error responses refer
    to (FastAPI adds only the schemas of response models, and errors are not those)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            found = problems.Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            extra = {"Problem": found, **found.pop("$defs", {})}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(extra)
            self.openapi_schema = schema
        return self.openapi_schema
