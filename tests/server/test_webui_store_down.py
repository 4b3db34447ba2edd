"""The web UI while its database cannot be reached: 503 with Retry-After, not a traceback.

The app is called in process (httpx's ASGI transport over https://testserver, so the Secure
cookies travel) on an SQLite file whose folder does not exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from sqlalchemy import create_engine

from mailstack.webui import create_webui


async def test_a_login_while_the_database_is_down_gets_503(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'mailstack.db'}")
    try:
        transport = httpx.ASGITransport(app=create_webui(engine))
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            page = await client.get("/")
            assert page.status_code == 200
            found = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert found
            form = {"csrf": found.group(1), "address": "a@example.com", "password": "x" * 12}
            answer = await client.post("/login", data=form)
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "30"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "__Host-mailstack-session" not in answer.headers.get("set-cookie", "")
    finally:
        engine.dispose()
