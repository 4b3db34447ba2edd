"""The web UI's whole story in one browser session, on a real `mailstack run --profile
server` on loopback: an admin logs in and adds a domain, a user and an alias; the new user
logs in, changes the password and adds a filing rule with the form; mail sent to the MX
afterwards (smtplib) is filed by that rule, read back over IMAP with the new password while
the old one is refused; a POST without the form's CSRF token changes nothing.

Debian's headless Chromium is driven by labels and roles only, what a keyboard or screen
reader user has; every page visited is photographed into the test artifacts.
"""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import browser_context, log_in_page, screenshot
from mailserver import PASSWORD, deliver, imap_session, subjects, wait_for_subject
from webui_harness import World, world_with

ADMIN = "root@example.com"
DOMAIN = "story.example"
USER = f"nia@{DOMAIN}"
ALIAS = f"team@{DOMAIN}"
FIRST_PASSWORD = "given by the admin"
NEW_PASSWORD = "nia chose this one"
BOSS = "boss@partner.test"


@pytest.fixture
def world() -> Iterator[World]:
    """The server with example.com and its admin only: the story adds everything else."""
    with world_with(()) as started:
        started.store.add_user(ADMIN, PASSWORD, admin=True)
        yield started


def test_the_admin_sets_up_a_user_whose_own_rule_files_mail_sent_afterwards(
    world: World,
) -> None:
    """The issue's browser story end to end, through the pages a person uses."""
    from playwright.sync_api import Locator, Page

    pages: list[Path] = []
    base = world.base

    def shot(page: Page, name: str) -> None:
        pages.append(screenshot(page, __name__, f"{len(pages) + 1:02d}-{name}"))

    def follow(page: Page, link: Locator, path: str) -> None:
        """Follow a link, wait for its page and photograph it."""
        link.click()
        page.wait_for_url(base + path)
        shot(page, path.rpartition("/")[2])

    def send_form(page: Page, fields: dict[str, str], button: str, name: str) -> str:
        """Type into the labelled fields, press the button; the status line it shows."""
        for label, value in fields.items():
            page.get_by_label(label, exact=True).fill(value)
        with page.expect_navigation():  # the POST, then its redirect to the page
            page.get_by_role("button", name=button).click()
        status = page.get_by_role("status").inner_text()
        shot(page, name)
        return status

    with browser_context() as context:
        page = context.new_page()
        page.goto(base + "/")
        shot(page, "login")
        log_in_page(page, base, ADMIN, PASSWORD)
        shot(page, "admin-account")
        admin = page.get_by_role("navigation", name="Administration")

        follow(page, admin.get_by_role("link", name="Domains"), "/admin/domains")
        status = send_form(page, {"Domain name": DOMAIN}, "Add domain", "domain-added")
        assert f"Domain {DOMAIN} added" in status
        hosted = page.get_by_role("table", name="Hosted domains")
        assert hosted.get_by_role("rowheader", name=DOMAIN).count() == 1

        follow(page, admin.get_by_role("link", name="Users"), "/admin/users")
        form = {"Address": USER, "Password": FIRST_PASSWORD, "Password again": FIRST_PASSWORD}
        assert f"User {USER} added" in send_form(page, form, "Add user", "user-added")
        users = page.get_by_role("table", name="All users")
        assert users.get_by_role("rowheader", name=USER).count() == 1

        follow(page, admin.get_by_role("link", name="Aliases"), "/admin/aliases")
        alias_label = "Alias address (or @domain for every unknown address of the domain)"
        deliver_label = (
            "Deliver to (addresses separated by spaces or commas; added to an existing alias)"
        )
        send_form(page, {alias_label: ALIAS, deliver_label: USER}, "Add alias", "alias-added")
        row = page.get_by_role("table", name="All aliases").get_by_role("row", name=ALIAS)
        assert USER in row.inner_text()
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(base + "/")

        log_in_page(page, base, USER, FIRST_PASSWORD)
        assert page.get_by_role("navigation", name="Administration").count() == 0
        shot(page, "user-account")
        form = {
            "Current password": FIRST_PASSWORD,
            "New password": NEW_PASSWORD,
            "New password again": NEW_PASSWORD,
        }
        status = send_form(page, form, "Change password", "password-changed")
        assert "Your password was changed" in status

        follow(page, page.get_by_role("link", name="Filter rules"), "/account/sieve")
        form = {
            "Mail from (an address, or a domain for anyone there)": BOSS,
            "goes into the folder (made if missing)": "Boss",
        }
        assert "saved and are in use" in send_form(page, form, "Add rule", "rule-added")
        (rule,) = page.get_by_role("list", name="Filing rules").get_by_role("listitem").all()
        assert BOSS in rule.inner_text()
        assert "folder Boss" in rule.inner_text()

        # the same logged-in browser, without the form's token: refused, nothing changed
        forged = context.request.post(
            base + "/account/password",
            form={"current": NEW_PASSWORD, "new": "the attackers", "again": "the attackers"},
            max_redirects=0,
        )
        assert forged.status == 403
        page.reload()
        shot(page, "after-forged-post")
    assert all(path.stat().st_size > 0 for path in pages)

    assert deliver(world.ports.smtp, BOSS, [ALIAS], "quarterly numbers") == {}
    assert deliver(world.ports.smtp, "friend@remote.test", [ALIAS], "lunch?") == {}
    imap = world.ports.imap
    boss = wait_for_subject(world.server, imap, USER, "quarterly numbers", "Boss", NEW_PASSWORD)
    inbox = wait_for_subject(world.server, imap, USER, "lunch?", password=NEW_PASSWORD)
    assert "lunch?" not in boss
    assert "quarterly numbers" not in inbox
    with imap_session(world.server, imap, USER, NEW_PASSWORD) as client:
        assert subjects(client, "Boss") == ["quarterly numbers"]
    with (
        pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"),
        imap_session(world.server, imap, USER, FIRST_PASSWORD),
    ):
        pass
    assert world.store.verify_password(USER, NEW_PASSWORD)
