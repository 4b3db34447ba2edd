"""What the web UI's tests share: a real server with some users, an HTTPS client for it
(cookies kept, redirects not followed), the forms' CSRF token, and the admin commands
run against the server's datastore. Headless Chromium is in browser.py.

Imported by the tests (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from mailserver import PASSWORD, MailServer, Ports, running_server, server_env
from tests.helpers import private_root

from mailstack.store import MailStore


@dataclass
class World:
    server: MailServer
    ports: Ports
    store: MailStore

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.ports.https}"

    def client(self, token: str | None = None) -> httpx.Client:
        """To the HTTPS listener; with `token`, as an API client bearing it."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.base,
            verify=self.server.tls_context(),
            headers=headers,
            timeout=60,
            follow_redirects=False,
        )

    def mailstack(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`mailstack ARGS` on this server's datastore, as an admin on the host runs it."""
        env = {**os.environ, "MAILSTACK_ROOT": str(self.server.root)}
        env.pop("MAILSTACK_DATABASE_URL", None)
        return subprocess.run(
            [sys.executable, "-m", "mailstack", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@contextlib.contextmanager
def world_with(users: tuple[str, ...]) -> Iterator[World]:
    """The server with `example.com` and `<name>@example.com` for each name, PASSWORD each."""
    with private_root() as root:
        store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
        try:
            store.add_domain("example.com")
            for user in users:
                store.add_user(f"{user}@example.com", PASSWORD)
            ports = Ports()
            with running_server(root, server_env(root, ports)) as server:
                yield World(server, ports, store)
        finally:
            store.close()


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)
