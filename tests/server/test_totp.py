"""The TOTP second factor through the real server's HTTPS listener: headless Chromium
(Debian's, through Playwright) turns it on from the shown secret (codes computed with
pyotp, as an authenticator app does), then logs in with a code; httpx posts forms as a
browser does for the rest; imaplib checks what TOTP changes for mail clients.

As an attacker: a wrong code, a replayed code, the account password over IMAP once TOTP is
on, turning TOTP off without the password. Each test uses its own user; failed logins slow
later ones from 127.0.0.1 (the login throttle), so few fail on purpose.
"""

from __future__ import annotations

import imaplib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest
from browser import browser_context
from mailserver import PASSWORD, imap_session
from tests.helpers import wait_for
from webui_harness import World, csrf, world_with

from mailstack.store import Conflict, MailStore
from mailstack.store.security import AccountSecurity

SESSION = "__Host-mailstack-session"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with world_with(("ann", "ben", "cid")) as started:
        yield started


def password_step(client: httpx.Client, address: str, password: str = PASSWORD) -> httpx.Response:
    page = client.get("/")
    return client.post(
        "/login", data={"csrf": csrf(page.text), "address": address, "password": password}
    )


def fresh_step() -> float:
    """A moment at least 10 s before the current 30-second step ends (waits if needed), so
    a code used now stays inside the accepted window for the rest of a test."""
    wait_for(lambda: time.time() % 30 < 20, 15, "the start of a TOTP step")
    return time.time()


def turn_on(world: World, client: httpx.Client, address: str) -> str:
    """Log in and turn TOTP on through the forms; returns the secret."""
    assert password_step(client, address).status_code == 303
    token = csrf(client.get("/account/security").text)
    assert client.post("/account/totp/setup", data={"csrf": token}).status_code == 303
    page = client.get("/account/security").text
    found = re.search(r'id="totp-secret">([A-Z2-7]+)<', page)
    assert found, page
    secret = found.group(1)
    code = pyotp.TOTP(secret).now()
    answer = client.post("/account/totp/enable", data={"csrf": token, "code": code})
    assert answer.status_code == 303, answer.text
    assert "Two-factor login is on" in client.get("/account/security").text
    return secret


def test_a_browser_turns_totp_on_and_then_needs_a_fresh_code(world: World) -> None:
    from playwright.sync_api import Page

    user = "ann@example.com"

    def log_in(page: Page) -> None:
        page.goto(world.base + "/")
        page.get_by_label("Email address").fill(user)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()

    def send_code(page: Page, code: str) -> None:
        page.get_by_label("Code").fill(code)
        page.get_by_role("button", name="Log in").click()

    with browser_context() as context:
        page = context.new_page()
        log_in(page)
        page.wait_for_url(world.base + "/account")
        page.get_by_role("link", name="Security").click()
        page.get_by_role("button", name="Set up two-factor login").click()
        secret = page.locator("#totp-secret").inner_text()
        uri = page.locator("#totp-uri").inner_text()
        assert uri.startswith("otpauth://totp/")
        assert f"secret={secret}" in uri
        assert page.locator(".qr svg").count() == 1  # drawn inline, fetched from nowhere
        authenticator = pyotp.TOTP(secret)
        page.get_by_label("Code from your app").fill(authenticator.now())
        page.get_by_role("button", name="Turn two-factor login on").click()
        page.get_by_role("status").wait_for()
        assert "Two-factor login is on" in page.get_by_role("status").inner_text()
        page.get_by_role("link", name="Account").click()
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(world.base + "/")

        log_in(page)  # the password alone no longer opens the account
        page.get_by_label("Code").wait_for()
        assert page.url == world.base + "/login"
        assert SESSION not in {c["name"] for c in context.cookies()}
        now = fresh_step()
        valid = {authenticator.at(now + 30 * offset) for offset in (-1, 0, 1)}
        wrong = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)
        send_code(page, wrong)
        page.get_by_role("alert").wait_for()
        assert "Wrong or already used code" in page.get_by_role("alert").inner_text()
        assert SESSION not in {c["name"] for c in context.cookies()}

        # the next step's code: the current one may be the code that turned TOTP on
        code = authenticator.at(now + 30)
        send_code(page, code)
        page.wait_for_url(world.base + "/account")
        assert page.locator("#address").inner_text() == user
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(world.base + "/")

        log_in(page)
        page.get_by_label("Code").wait_for()
        send_code(page, code)  # the same code, still inside its window: refused
        page.get_by_role("alert").wait_for()
        assert "Wrong or already used code" in page.get_by_role("alert").inner_text()
        assert time.time() // 30 <= now // 30 + 1, "the replay left the code's window"
        assert SESSION not in {c["name"] for c in context.cookies()}
        assert page.url == world.base + "/login/totp"


def test_with_totp_on_mail_clients_need_an_app_password(world: World) -> None:
    """The account password stops working over IMAP; an app password works; the code form
    refuses to start a session without a code."""
    user = "ben@example.com"
    app = AccountSecurity(world.store).add_app_password(user, "phone")[1]
    with world.client() as client:
        turn_on(world, client, user)
    with (
        pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"),
        imap_session(world.server, world.ports.imap, user, PASSWORD),
    ):
        pass
    with imap_session(world.server, world.ports.imap, user, app) as imap:
        assert imap.noop()[0] == "OK"
    with world.client() as client:
        answer = password_step(client, user)
        assert answer.status_code == 200
        assert 'name="code"' in answer.text
        assert SESSION not in client.cookies
        assert client.get("/account").headers["location"] == "/"
        # the code form needs its own token: a bare POST is refused
        assert client.post("/login/totp", data={"code": "123456"}).status_code == 403


def test_turning_totp_off_needs_the_password_and_a_code_and_an_admin_can_reset(
    world: World,
) -> None:
    user = "cid@example.com"
    with world.client() as client:
        secret = turn_on(world, client, user)
        token = csrf(client.get("/account/security").text)
        code = pyotp.TOTP(secret).at(time.time() + 30)  # not the one used to turn it on
        refused = client.post(
            "/account/totp/disable", data={"csrf": token, "current": "wrong", "code": code}
        )
        assert refused.status_code == 400
        assert "current password is wrong" in refused.text
        assert AccountSecurity(world.store).totp_enabled(user)
        answer = client.post(
            "/account/totp/disable", data={"csrf": token, "current": PASSWORD, "code": code}
        )
        assert answer.status_code == 303
        assert "Two-factor login is off" in client.get("/account/security").text
    assert not AccountSecurity(world.store).totp_enabled(user)
    with imap_session(world.server, world.ports.imap, user, PASSWORD) as imap:
        assert imap.noop()[0] == "OK"  # the account password is a mail password again

    with world.client() as client:
        turn_on(world, client, user)
    reset = world.mailstack("user", "totp-reset", user)
    assert reset.returncode == 0, reset.stderr
    assert f"TOTP of {user} reset" in reset.stdout
    with world.client() as client:
        assert password_step(client, user).headers["location"] == "/account"


def test_the_store_accepts_each_code_once_and_never_an_older_one(tmp_path: Path) -> None:
    """On a real SQLite datastore with a hand-moved clock: confirming turns TOTP on; a code
    is accepted once; after a newer step, an older code that is still in the window is not."""
    store = MailStore.open(tmp_path / "mail.db")
    try:
        store.add_domain("example.com")
        store.add_user("dan@example.com", PASSWORD)
        clock = [1_800_000_005.0]
        security = AccountSecurity(store, clock=lambda: clock[0])
        user = "dan@example.com"
        secret = security.begin_totp(user)
        app = pyotp.TOTP(secret)
        assert not security.check_totp(user, app.at(clock[0]))  # not on yet
        assert not security.confirm_totp(user, "000000" if app.at(clock[0]) != "000000" else "1")
        assert security.confirm_totp(user, app.at(clock[0]))
        assert security.totp_enabled(user)
        assert security.pending_totp_secret(user) is None
        assert not security.check_totp(user, app.at(clock[0]))  # the confirming code again
        clock[0] += 30
        assert security.check_totp(user, app.at(clock[0]))
        assert not security.check_totp(user, app.at(clock[0] - 30))  # older, still in window
        assert security.check_totp(user, app.at(clock[0] + 30))
        with pytest.raises(Conflict):
            security.begin_totp(user)
        assert security.reset_totp(user)
        assert not security.totp_enabled(user)
        assert not security.reset_totp(user)
    finally:
        store.close()
