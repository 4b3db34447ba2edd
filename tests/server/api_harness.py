"""The REST API under a real uvicorn on loopback, mounted at /api/v1 as the worker mounts it.

uvicorn runs in a thread of the test process (it installs no signal handlers there); the
fixture stops it in its teardown, also when the test failed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.routing import Mount
from tests.helpers import free_port, wait_for

from mailstack.api import MOUNT_PATH, create_api
from mailstack.dkim.requests import RotationRequests, RotationSetup
from mailstack.settings.values import parse_selectors
from mailstack.sieve import check_script
from mailstack.store.service import Checker

START_TIMEOUT = 15.0


@contextmanager
def serving(
    engine: Engine,
    dkim_keys: Path,
    dkim_selector: str = "mail",
    sieve_checker: Checker = check_script,
    *,
    mounted: bool = True,
    rotation_trigger: Path | None = None,
) -> Iterator[str]:
    """Serve the API over `engine`; yields the API's base URL (`http://127.0.0.1:P/api/v1`).

    `mounted`: inside a Starlette app at /api/v1, as the worker does; else alone, at the root
    (`http://127.0.0.1:P`): a Mount matches no path holding a line break, and its 404 is then
    Starlette's plain text, not the API's problem. `rotation_trigger`: where DKIM rotation
    steps are asked for (nobody carries them out here); None: those routes answer 503.
    """
    rotation = RotationSetup(RotationRequests(rotation_trigger)) if rotation_trigger else None
    api = create_api(
        engine,
        dkim_keys=dkim_keys,
        dkim_selectors=parse_selectors(dkim_selector),
        sieve_checker=sieve_checker,
        dkim_rotation=rotation,
    )
    site = Starlette(routes=[Mount(MOUNT_PATH, app=api)]) if mounted else api
    port = free_port()
    config = uvicorn.Config(
        site,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), START_TIMEOUT, "uvicorn")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}{MOUNT_PATH if mounted else ''}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)


def client(base_url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=30.0)
