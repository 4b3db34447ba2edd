"""The server starts while its datastore is unreachable: 4xx on the MX, never a crash loop,
and the datastore is migrated and used as soon as it answers."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

from mailserver import Ports, deliver, running_server, server_env, wait_for_subject
from server_harness import PostgresServer
from sqlalchemy import text
from tests.helpers import private_root, wait_for

from mailstack.store import MailStore, create_engine_for

PASSWORD = "correct horse battery staple"


def _refused_with(port: int) -> Callable[[], int | None]:
    def code() -> int | None:
        try:
            deliver(port, "a@remote.test", ["alice@example.com"], "back")
        except smtplib.SMTPRecipientsRefused as exc:
            return int(exc.recipients["alice@example.com"][0])
        return None

    return code


def test_store_down_at_start_defers_then_recovers(postgres: PostgresServer) -> None:
    """PostgreSQL database missing at start: the server is ready, the MX answers 4xx; once
    the database exists the worker migrates it and mail for a new user is delivered."""
    name = "mailstack_created_later"
    url = f"postgresql+psycopg://postgres@127.0.0.1:{postgres.port}/{name}"
    admin = create_engine_for(postgres.admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with private_root() as root:
            ports = Ports()
            env = server_env(root, ports, MAILSTACK_DATABASE_URL=url)
            with running_server(root, env) as server:
                assert "starting anyway" in server.log
                code = _refused_with(ports.smtp)()
                assert code is not None
                assert 400 <= code < 500, code
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                wait_for(
                    lambda: "datastore reachable and migrated" in server.log,
                    60,
                    "the worker to migrate the datastore",
                )
                store = MailStore(create_engine_for(url))
                try:
                    store.add_domain("example.com")
                    store.add_user("alice@example.com", PASSWORD)
                finally:
                    store.close()
                # Postfix keeps a failed lookup for a few seconds: retry until accepted
                wait_for(lambda: _refused_with(ports.smtp)() is None, 60, "the MX to accept again")
                wait_for_subject(server, ports.imap, "alice@example.com", "back")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
