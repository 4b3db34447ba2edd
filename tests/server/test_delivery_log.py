"""Each user's delivery log through a real `mailstack run --profile server` on loopback: mail
sent to the MX and mail a user submits (to a loopback SMTP server standing in for the
outside world, which accepts one recipient and asks to retry another) shows in that user's
`GET /api/v1/users/{address}/deliveries` and on their web page, and nowhere else.
"""

from __future__ import annotations

import contextlib
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from browser import browser_context, browser_login, screenshot
from mailserver import (
    PASSWORD,
    MailServer,
    Ports,
    deliver,
    message,
    running_server,
    server_env,
    wait_for_subject,
)
from tests.helpers import free_port, private_root

from mailstack.store import MailStore

LATER = "later@remote.test"  # the outside server answers 450 for this one: deferred


class Outside:
    """The outside world's MX: accepts every recipient but LATER."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address == LATER:
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 accepted outside"


@dataclass
class World:
    server: MailServer
    ports: Ports
    store: MailStore
    tokens: dict[str, str]

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.ports.https}"

    def api(self, who: str | None) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(
            base_url=self.base + "/api/v1",
            verify=self.server.tls_context(),
            timeout=60,
            headers=headers,
        )


@contextlib.contextmanager
def outside_mx() -> Iterator[int]:
    port = free_port()
    controller = Controller(Outside(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with private_root() as root, outside_mx() as outside:
        store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
        try:
            store.add_domain("example.com")
            for user in ("ann", "ben", "cat"):
                store.add_user(f"{user}@example.com", PASSWORD)
            tokens = {
                "admin": store.create_token("admin")[1],
                "ann": store.create_token("ann", "ann@example.com")[1],
                "ben": store.create_token("ben", "ben@example.com")[1],
            }
            ports = Ports()
            env = server_env(root, ports, RELAYHOST=f"[127.0.0.1]:{outside}")
            with running_server(root, env) as server:
                world = World(server, ports, store, tokens)
                send_the_mail(world)
                yield world
        finally:
            store.close()


def send_the_mail(world: World) -> None:
    """A friend writes to ann at the MX; ann sends (587, logged in) to an outside address,
    to one the outside defers, and to ben here."""
    assert deliver(world.ports.smtp, "friend@remote.test", ["ann@example.com"], "hello ann") == {}
    wait_for_subject(world.server, world.ports.imap, "ann@example.com", "hello ann")
    recipients = ["out@remote.test", LATER, "ben@example.com"]
    with smtplib.SMTP("127.0.0.1", world.ports.submission, timeout=30) as client:
        client.starttls(context=world.server.tls_context())
        client.login("ann@example.com", PASSWORD)
        client.sendmail(
            "ann@example.com", recipients, message("ann@example.com", recipients[0], "from ann")
        )
    wait_for_subject(world.server, world.ports.imap, "ben@example.com", "from ann")


def deliveries(world: World, who: str, address: str, count: int) -> list[dict[str, Any]]:
    """The user's deliveries once at least `count` are there (the log is written as the
    daemons report, a moment after the mail moved)."""
    deadline = time.monotonic() + 30
    with world.api(who) as api:
        while True:
            answer = api.get(f"/users/{address}/deliveries")
            assert answer.status_code == 200, answer.text
            found: list[dict[str, Any]] = answer.json()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def test_a_user_sees_mail_in_and_out_with_status_relay_and_reply(world: World) -> None:
    found = deliveries(world, "ann", "ann@example.com", 4)
    seen = {(d["direction"], d["recipient"]): d for d in found}
    assert set(seen) == {
        ("in", "ann@example.com"),
        ("out", "out@remote.test"),
        ("out", LATER),
        ("out", "ben@example.com"),
    }, found
    inbound = seen["in", "ann@example.com"]
    assert inbound["sender"] == "friend@remote.test"
    assert (inbound["status"], inbound["mailbox"]) == ("sent", "INBOX")
    assert inbound["queue_id"]
    sent = seen["out", "out@remote.test"]
    assert sent["sender"] == "ann@example.com"
    assert sent["status"] == "sent"
    assert sent["relay"].startswith("127.0.0.1[127.0.0.1]:")
    assert "accepted outside" in sent["reply"]
    assert sent["mailbox"] is None
    later = seen["out", LATER]
    assert later["status"] == "deferred"
    assert "mailbox busy, try later" in later["reply"]
    local = seen["out", "ben@example.com"]
    assert local["status"] == "sent"
    assert local["mailbox"] is None  # where ben filed it is ben's business
    assert found == sorted(found, key=lambda d: d["time"], reverse=True)
    with world.api("ann") as api:
        assert len(api.get("/users/ann@example.com/deliveries?limit=2").json()) == 2
        assert api.get("/users/ann@example.com/deliveries?limit=201").status_code == 422


def test_the_recipient_sees_the_mail_in_but_not_what_else_it_was_sent_to(world: World) -> None:
    found = deliveries(world, "ben", "ben@example.com", 1)
    assert [(d["direction"], d["sender"], d["status"], d["mailbox"]) for d in found] == [
        ("in", "ann@example.com", "sent", "INBOX")
    ]


def test_an_admin_reads_anyones_log_and_others_get_403(world: World) -> None:
    own = deliveries(world, "ann", "ann@example.com", 4)
    assert deliveries(world, "admin", "ann@example.com", 4) == own
    with world.api("ben") as api:
        answer = api.get("/users/ann@example.com/deliveries")
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"
        bens = api.get("/users/ben@example.com/deliveries").text
        assert "out@remote.test" not in bens
        assert LATER not in bens
    with world.api(None) as api:
        assert api.get("/users/ann@example.com/deliveries").status_code == 401
    with world.api("admin") as api:
        assert api.get("/users/cat@example.com/deliveries").json() == []
        assert api.get("/users/nobody@example.com/deliveries").status_code == 404


def test_the_web_page_shows_the_users_deliveries(world: World) -> None:
    deliveries(world, "ann", "ann@example.com", 4)
    with browser_context() as context:
        page = browser_login(context, world.base, "ann@example.com", PASSWORD)
        page.get_by_role("link", name="Delivery log").click()
        page.wait_for_url(world.base + "/account/deliveries")
        table = page.locator("#deliveries").inner_text()
        screenshot(page, __name__, "ann")
        assert "friend@remote.test" in table
        assert "sent: in INBOX" in table
        assert "out@remote.test" in table
        assert "deferred" in table
        assert "mailbox busy, try later" in table
    with browser_context() as context:
        other = browser_login(context, world.base, "cat@example.com", PASSWORD)
        other.goto(world.base + "/account/deliveries")
        assert "No deliveries yet." in other.content()
        assert "friend@remote.test" not in other.content()
        screenshot(other, __name__, "cat-empty")
