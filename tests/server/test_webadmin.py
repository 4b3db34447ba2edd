"""The web UI's admin pages on a real server (`mailstack run --profile server` on loopback):
an admin drives them in Debian's headless Chromium, other users and forged forms are
refused, and queued mail is deleted through the REST API, the page and the CLI, checked
with Postfix's own `postqueue -j`.

Mail to remote domains goes to a relay host nobody listens on, so it waits in the queue.
No test fails a login on purpose (the login throttle would slow the others).
"""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from browser import browser_context, browser_login, screenshot
from mailserver import (
    PASSWORD,
    Ports,
    deliver,
    imap_session,
    message,
    running_server,
    server_env,
    wait_for_subject,
)
from test_webui import World as WebWorld
from test_webui import csrf, log_in
from tests.helpers import MAILSTACK, free_port, private_root, wait_for

from mailstack.dkim.keys import parse_txt
from mailstack.store import MailStore

ADMIN = "boss@example.com"
USER = "pat@example.com"
SENDER = "alice@example.com"
NEW_PASSWORD = "kims own passphrase"
ADMIN_PAGES = [
    "/admin",
    "/admin/domains",
    "/admin/domains/example.com",
    "/admin/users",
    "/admin/aliases",
    "/admin/queue",
]
ADMIN_FORMS = {
    "/admin/domains/add": {"name": "evil.example"},
    "/admin/domains/remove": {"name": "example.com", "cascade": "on"},
    "/admin/users/add": {"address": "mole@example.com", "password": PASSWORD, "again": PASSWORD},
    "/admin/users/password": {"address": ADMIN, "password": "taken over", "again": "taken over"},
    "/admin/users/admin": {"address": USER, "admin": "on"},
    "/admin/users/remove": {"address": ADMIN},
    "/admin/aliases/add": {"source": "postmaster@example.com", "targets": USER},
    "/admin/aliases/remove": {"source": "info@example.com"},
    "/admin/queue/flush": {},
    "/admin/queue/delete": {"queue_id": "4C3F81A2B7"},
}


@dataclass
class World(WebWorld):
    admin_token: str
    user_token: str

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base + "/api/v1", verify=self.server.tls_context(), timeout=30
        )

    def queued(self) -> dict[str, list[str]]:
        """Queue id -> recipients, as Postfix's own `postqueue -j` shows the queue."""
        config = self.server.root / "etc/postfix"
        result = subprocess.run(
            ["postqueue", "-c", str(config), "-j"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        found = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        return {m["queue_id"]: [r["address"] for r in m["recipients"]] for m in found}

    def queue_message(self, recipient: str) -> str:
        """Submit a message to a remote recipient; it waits in the queue. Its queue id."""
        with smtplib.SMTP("127.0.0.1", self.ports.submission, timeout=30) as client:
            client.starttls(context=self.server.tls_context())
            client.login(SENDER, PASSWORD)
            client.sendmail(SENDER, [recipient], message(SENDER, recipient, "held"))
        ids: list[str] = []

        def listed() -> bool:
            ids[:] = [i for i, rcpts in self.queued().items() if recipient in rcpts]
            return bool(ids)

        wait_for(listed, 60, f"the message to {recipient} in the queue")
        return ids[0]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with private_root() as root:
        store = MailStore.open(root / "var/lib/mailstack/mailstack.db")
        try:
            store.add_domain("example.com")
            store.add_user(ADMIN, PASSWORD, admin=True)
            store.add_user(USER, PASSWORD)
            store.add_user(SENDER, PASSWORD)
            store.add_alias("info@example.com", [USER])
            admin_token = store.create_token("ops")[1]
            user_token = store.create_token("pat", USER)[1]
            ports = Ports()
            nobody = free_port()  # the relay host is down: remote mail waits in the queue
            env = server_env(root, ports, RELAYHOST=f"[127.0.0.1]:{nobody}")
            with running_server(root, env) as server:
                yield World(server, ports, store, admin_token, user_token)
        finally:
            store.close()


def page_token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return csrf(page.text)


def test_an_admin_sets_up_a_domain_in_the_browser_and_its_new_user_gets_mail(
    world: World,
) -> None:
    """Domain, user and alias added through the pages (keyboard and labels only); the
    domain gets its DKIM key as through the API; the user logs in over IMAP with the
    password the admin set, and mail to the alias over the MX lands in their Inbox. A
    queued message is deleted from its page. Every admin page is photographed."""
    held = world.queue_message("far-browser@remote.test")
    shots: list[Path] = []
    with browser_context() as context:
        page = browser_login(context, world.base, ADMIN, PASSWORD)
        page.get_by_role("link", name="Domains", exact=True).click()
        page.wait_for_url(world.base + "/admin/domains")

        page.get_by_label("Domain name").fill("Shop.Example")
        page.get_by_label("Domain name").press("Enter")  # the keyboard submits the form
        page.get_by_role("status").wait_for()
        assert "Domain shop.example added" in page.get_by_role("status").inner_text()
        page.get_by_role("link", name="DNS records of shop.example").click()
        page.wait_for_url(world.base + "/admin/domains/shop.example")
        keys = world.server.root / "etc/opendkim/keys"
        wait_for(lambda: (keys / "shop.example.txt").exists(), 60, "the new domain's DKIM key")

        def key_shown() -> bool:
            page.reload()
            return "No DKIM key" not in page.content()

        wait_for(key_shown, 30, "the DKIM record on the domain's page")
        zone = page.locator("#zone").inner_text()
        published = parse_txt((keys / "shop.example.txt").read_text())
        assert published.split("p=")[1][:200] in zone.replace('" "', "")
        assert re.search(r"^shop\.example\.\s+IN MX\s+10 mx\.example\.com\.$", zone, re.M)
        shots.append(screenshot(page, __name__, "admin-domain"))
        page.get_by_role("link", name="Domains", exact=True).click()
        assert "mail._domainkey.shop.example" in page.content()
        shots.append(screenshot(page, __name__, "admin-domains"))

        page.get_by_role("link", name="Users", exact=True).click()
        page.get_by_label("Address").fill("kim@shop.example")
        page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("Password again", exact=True).fill(NEW_PASSWORD)
        page.get_by_role("button", name="Add user").click()
        page.get_by_role("status").wait_for()
        assert "User kim@shop.example added" in page.get_by_role("status").inner_text()
        shots.append(screenshot(page, __name__, "admin-users"))

        page.get_by_role("link", name="Aliases", exact=True).click()
        page.get_by_label("Alias address").fill("sales@shop.example")
        page.get_by_label("Deliver to").fill("kim@shop.example")
        page.get_by_role("button", name="Add alias").click()
        page.get_by_role("status").wait_for()
        assert "sales@shop.example delivers to kim@shop.example" in page.content()
        shots.append(screenshot(page, __name__, "admin-aliases"))

        page.get_by_role("link", name="Mail queue", exact=True).click()
        assert "far-browser@remote.test" in page.content()
        shots.append(screenshot(page, __name__, "admin-queue"))
        page.get_by_role("button", name=f"Delete message {held}").click()
        page.get_by_role("status").wait_for()
        wait_for(lambda: held not in world.queued(), 30, "the message deleted by root")
        page.reload()
        assert held not in page.content()
    assert all(shot.stat().st_size > 0 for shot in shots)

    with imap_session(world.server, world.ports.imap, "kim@shop.example", NEW_PASSWORD) as imap:
        assert imap.noop()[0] == "OK"
    assert deliver(world.ports.smtp, "a@remote.test", ["sales@shop.example"], "to sales") == {}
    wait_for_subject(
        world.server, world.ports.imap, "kim@shop.example", "to sales", password=NEW_PASSWORD
    )


def test_other_users_get_403_on_every_admin_page_and_form(world: World) -> None:
    with world.client() as client:
        assert log_in(client, USER).status_code == 303
        token = page_token(client, "/account")
        assert "/admin" not in client.get("/account").text  # no way in is shown
        for path in ADMIN_PAGES:
            assert client.get(path).status_code == 403, path
        for path, form in ADMIN_FORMS.items():
            assert client.post(path, data={**form, "csrf": token}).status_code == 403, path
    with world.client() as anonymous:
        for path in ADMIN_PAGES:
            assert anonymous.get(path).headers["location"] == "/", path
        for path, form in ADMIN_FORMS.items():
            assert anonymous.post(path, data=form).headers["location"] == "/", path
    domains = {d.name for d in world.store.list_domains()}
    assert "evil.example" not in domains
    assert "example.com" in domains
    assert not world.store.get_user(USER).admin
    assert world.store.verify_password(ADMIN, PASSWORD)
    assert [a.source for a in world.store.list_aliases("example.com")] == ["info@example.com"]


def test_the_admin_flag_is_read_at_every_request(world: World) -> None:
    """`mailstack user set-admin` on the running server opens the pages to a logged-in
    user at once, and `--off` closes them again."""
    env = {**world.server.env}

    def set_admin(*flag: str) -> None:
        result = subprocess.run(
            [*MAILSTACK, "user", "set-admin", USER, *flag],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr

    with world.client() as client:
        assert log_in(client, USER).status_code == 303
        try:
            set_admin()
            assert client.get("/admin/users").status_code == 200
        finally:
            set_admin("--off")
        assert client.get("/admin/users").status_code == 403


def test_admin_posts_without_the_right_token_or_from_another_site_are_refused(
    world: World,
) -> None:
    with world.client() as client:
        assert log_in(client, ADMIN).status_code == 303
        token = page_token(client, "/admin/domains")
        form = {"name": "forged.example"}
        assert client.post("/admin/domains/add", data=form).status_code == 403
        assert client.post("/admin/domains/add", data={**form, "csrf": "x" * 43}).status_code == 403
        cross = {"origin": "https://evil.example"}
        answer = client.post("/admin/domains/add", data={**form, "csrf": token}, headers=cross)
        assert answer.status_code == 403
        answer = client.post("/admin/users/remove", data={"address": USER})
        assert answer.status_code == 403
        assert "forged.example" not in {d.name for d in world.store.list_domains()}
        assert world.store.get_user(USER).address == USER
        # the same form with the session's token is taken
        answer = client.post("/admin/domains/add", data={"name": "real.example", "csrf": token})
        assert answer.status_code == 303
    assert "real.example" in {d.name for d in world.store.list_domains()}


def test_refused_changes_show_the_reason_and_keep_what_was_typed(world: World) -> None:
    with world.client() as client:
        assert log_in(client, ADMIN).status_code == 303
        token = page_token(client, "/admin/domains")
        again = client.post("/admin/domains/add", data={"name": "example.com", "csrf": token})
        assert again.status_code == 409
        assert "already exists" in again.text
        form = {"address": "new@example.com", "password": "one passphrase", "again": "two"}
        differ = client.post("/admin/users/add", data={**form, "csrf": token})
        assert differ.status_code == 400
        assert "differ" in differ.text
        assert 'value="new@example.com"' in differ.text
        assert "one passphrase" not in differ.text
        nowhere = {"address": "x@nowhere.example", "password": PASSWORD, "again": PASSWORD}
        assert client.post("/admin/users/add", data={**nowhere, "csrf": token}).status_code == 404
        myself = client.post("/admin/users/remove", data={"address": ADMIN, "csrf": token})
        assert myself.status_code == 409
        demote = {"address": ADMIN, "admin": "off", "csrf": token}
        assert client.post("/admin/users/admin", data=demote).status_code == 409
        bad_id = client.post("/admin/queue/delete", data={"queue_id": "ALL", "csrf": token})
        assert bad_id.status_code == 400
        assert "not a Postfix queue id" in bad_id.text
        assert client.get("/admin/domains/unknown.example").status_code == 404
    assert world.store.get_user(ADMIN).admin
    assert "new@example.com" not in {u.address for u in world.store.list_users()}


def test_a_queued_message_is_deleted_through_the_api(world: World) -> None:
    """Listed by the API and the page; DELETE answers 202 and root's postsuper removes it
    (gone from `postqueue -j`); then 404; a malformed id 422; a user token 403."""
    queue_id = world.queue_message("far-api@remote.test")
    admin = {"Authorization": f"Bearer {world.admin_token}"}
    user = {"Authorization": f"Bearer {world.user_token}"}
    with world.api() as api:
        listed = api.get("/queue", headers=admin).json()
        assert queue_id in {m["queue_id"] for m in listed}
        with world.client() as client:
            assert log_in(client, ADMIN).status_code == 303
            assert queue_id in client.get("/admin/queue").text
        assert api.delete(f"/queue/{queue_id}", headers=user).status_code == 403
        assert api.delete("/queue/ALL", headers=admin).status_code == 422
        answer = api.delete(f"/queue/{queue_id}", headers=admin)
        assert answer.status_code == 202, answer.text
        wait_for(lambda: queue_id not in world.queued(), 30, "the message deleted by root")
        assert queue_id not in {m["queue_id"] for m in api.get("/queue", headers=admin).json()}
        gone = api.delete(f"/queue/{queue_id}", headers=admin)
        assert gone.status_code == 404
        assert gone.headers["content-type"] == "application/problem+json"
    wait_for(lambda: "queue-delete ended (code 0)" in world.server.log, 30, "the job's end")


def test_root_deletes_a_queued_message_with_the_cli(world: World) -> None:
    queue_id = world.queue_message("far-cli@remote.test")
    env = {**world.server.env}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MAILSTACK, "queue", "delete", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    refused = cli("ALL")
    assert refused.returncode == 2
    assert "not a Postfix queue id" in refused.stderr
    assert queue_id in world.queued()
    deleted = cli(queue_id)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == f"{queue_id}: deleted\n"
    assert queue_id not in world.queued()
    again = cli(queue_id)
    assert again.returncode == 1
    assert again.stdout == f"{queue_id}: not in the queue\n"
