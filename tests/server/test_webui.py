"""The users' web UI through the real server's HTTPS listener: a full `mailstack run
--profile server` on loopback, driven by httpx (forms as a browser posts them), imaplib and
one headless Chromium (Debian's, through Playwright).

Each test uses its own user, so their order does not matter. A failed login slows later ones
from 127.0.0.1 (the login throttle), so only one test fails a login on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from browser import browser_context, browser_login, screenshot
from mailserver import PASSWORD, imap_session
from webui_harness import World, csrf, world_with

SESSION = "__Host-mailstack-session"
USERS = ("ann", "ben", "cid", "dee", "eve", "fay", "gus", "hal")


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with world_with(USERS) as running:
        yield running


def log_in(client: httpx.Client, address: str, password: str = PASSWORD) -> httpx.Response:
    page = client.get("/")
    assert page.status_code == 200
    return client.post(
        "/login", data={"csrf": csrf(page.text), "address": address, "password": password}
    )


def account_token(client: httpx.Client) -> str:
    page = client.get("/account")
    assert page.status_code == 200
    return csrf(page.text)


def test_login_page_works_without_javascript_and_sends_security_headers(world: World) -> None:
    with world.client() as client:
        page = client.get("/")
    assert page.status_code == 200
    assert "<script" not in page.text
    assert '<label for="address">' in page.text
    assert '<label for="password">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert SESSION not in page.headers.get("set-cookie", "")
    with world.client() as client:
        for answer, status in ((client.get("/nothing"), 404), (client.delete("/account"), 405)):
            assert answer.status_code == status
            assert answer.headers["x-frame-options"] == "DENY"


def test_wrong_password_shows_the_login_page_with_an_error_and_no_session(world: World) -> None:
    with world.client() as client:
        answer = log_in(client, "ann@example.com", "not the password")
        assert answer.status_code == 401
        assert "Wrong address or password" in answer.text
        assert SESSION not in answer.headers.get("set-cookie", "")
        assert SESSION not in client.cookies
        assert client.get("/account").headers["location"] == "/"


def test_right_password_sets_a_strict_session_cookie_and_shows_the_account(world: World) -> None:
    with world.client() as client:
        answer = log_in(client, "ben@example.com")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/account"
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION))
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= flags
        assert len(client.cookies[SESSION]) >= 43  # 32 random bytes, base64url
        page = client.get("/account")
        assert page.status_code == 200
        assert "ben@example.com" in page.text


def test_changed_password_works_for_imap_and_the_old_one_does_not(world: World) -> None:
    new = "a brand new passphrase"
    with world.client() as client:
        assert log_in(client, "cid@example.com").status_code == 303
        answer = client.post(
            "/account/password",
            data={"csrf": account_token(client), "current": PASSWORD, "new": new, "again": new},
        )
        assert answer.status_code == 303
        assert "Your password was changed" in client.get("/account").text
    assert world.store.verify_password("cid@example.com", new)
    assert not world.store.verify_password("cid@example.com", PASSWORD)
    with imap_session(world.server, world.ports.imap, "cid@example.com", new) as imap:
        assert imap.noop()[0] == "OK"


def test_new_passwords_that_differ_change_nothing(world: World) -> None:
    with world.client() as client:
        assert log_in(client, "dee@example.com").status_code == 303
        answer = client.post(
            "/account/password",
            data={
                "csrf": account_token(client),
                "current": PASSWORD,
                "new": "first new passphrase",
                "again": "second new passphrase",
            },
        )
        assert answer.status_code == 400
        assert "differ" in answer.text
    assert world.store.verify_password("dee@example.com", PASSWORD)


def test_spam_form_sets_the_users_settings(world: World) -> None:
    with world.client() as client:
        assert log_in(client, "eve@example.com").status_code == 303
        token = account_token(client)
        answer = client.post("/account/spam", data={"csrf": token, "threshold": "9"})
        assert answer.status_code == 303
        settings = world.store.spam_settings("eve@example.com")
        assert (settings.threshold, settings.filter) == (9, False)
        answer = client.post("/account/spam", data={"csrf": token, "threshold": "", "filter": "on"})
        assert answer.status_code == 303
        assert "Your spam settings were saved" in client.get("/account").text
        settings = world.store.spam_settings("eve@example.com")
        assert (settings.threshold, settings.filter) == (None, True)
        answer = client.post("/account/spam", data={"csrf": token, "threshold": "ten"})
        assert answer.status_code == 400
    assert world.store.spam_settings("eve@example.com").threshold is None


def test_posts_without_the_right_token_or_from_another_site_are_refused(world: World) -> None:
    before = world.store.spam_settings("fay@example.com")
    with world.client() as client:
        assert log_in(client, "fay@example.com").status_code == 303
        token = account_token(client)
        form = {"threshold": "3", "filter": "on"}
        assert client.post("/account/spam", data=form).status_code == 403
        assert client.post("/account/spam", data={**form, "csrf": "x" * 43}).status_code == 403
        cross = {"origin": "https://evil.example"}
        answer = client.post("/account/spam", data={**form, "csrf": token}, headers=cross)
        assert answer.status_code == 403
        site = {"sec-fetch-site": "cross-site"}
        answer = client.post("/account/spam", data={**form, "csrf": token}, headers=site)
        assert answer.status_code == 403
        opaque = {"origin": "null"}  # passes only with Sec-Fetch-Site: same-origin
        answer = client.post("/account/spam", data={**form, "csrf": token}, headers=opaque)
        assert answer.status_code == 403
        huge = {**form, "csrf": token, "padding": "x" * 20_000}
        assert client.post("/account/spam", data=huge).status_code == 413
        # the login form too
        assert client.post("/login", data={"address": "x", "password": "y"}).status_code == 403
    assert world.store.spam_settings("fay@example.com") == before


def test_a_session_changes_only_its_own_user(world: World) -> None:
    with world.client() as client:
        assert log_in(client, "gus@example.com").status_code == 303
        token = account_token(client)
        # no user selector exists: a field or query naming another user is ignored
        answer = client.post(
            "/account/spam?address=hal@example.com",
            data={"csrf": token, "threshold": "4", "address": "hal@example.com"},
        )
        assert answer.status_code == 303
    assert world.store.spam_settings("gus@example.com").threshold == 4
    assert world.store.spam_settings("hal@example.com").threshold is None


def test_logout_ends_the_session(world: World) -> None:
    with world.client() as client:
        assert log_in(client, "hal@example.com").status_code == 303
        token = account_token(client)
        stolen = client.cookies[SESSION]
        answer = client.post("/logout", data={"csrf": token})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"
    with world.client() as other:
        other.cookies.set(SESSION, stolen, domain="127.0.0.1")
        assert other.get("/account").headers["location"] == "/"
        answer = other.post("/account/spam", data={"csrf": token, "threshold": "5"})
        assert answer.status_code == 303
    assert world.store.spam_settings("hal@example.com").threshold is None


def test_a_browser_logs_in_and_saves_spam_settings(world: World) -> None:
    with browser_context() as context:
        page = browser_login(context, world.base, "ann@example.com", PASSWORD)
        assert page.locator("#address").inner_text() == "ann@example.com"
        page.get_by_label("Spam score threshold").fill("7")
        page.get_by_label("File spam in my Junk folder").check()
        page.get_by_role("button", name="Save spam settings").click()
        page.get_by_role("status").wait_for()
        assert "Your spam settings were saved" in page.get_by_role("status").inner_text()
        assert screenshot(page, __name__, "account").stat().st_size > 0
    settings = world.store.spam_settings("ann@example.com")
    assert (settings.threshold, settings.filter) == (7, True)
