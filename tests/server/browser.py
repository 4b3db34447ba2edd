"""Debian's headless Chromium through Playwright for the web UI's tests: a browser (or a
fresh profile trusting the test server's self-signed certificate) closed however a test
ends, a login as a user does it, and screenshots kept as test artifacts.

Screenshots go to `$MAILSTACK_TEST_ARTIFACTS/screenshots/` (default
`build/test-artifacts/screenshots/` in the repository, ignored by git), one PNG per page,
named `<test module>-<name>.png`.

Imported by the tests (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
REPOSITORY = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def screenshots() -> Path:
    """The artifact folder of the screenshots (made when missing)."""
    base = os.environ.get("MAILSTACK_TEST_ARTIFACTS", str(REPOSITORY / "build/test-artifacts"))
    folder = Path(base) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page: Page, module: str, name: str) -> Path:
    """The whole page as `<module>-<name>.png` among the artifacts (`module`: the test's
    `__name__`, so two tests' pages never overwrite each other); returns the file."""
    path = screenshots() / f"{module.rpartition('.')[2]}-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """One headless Chromium, closed however the test ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def browser_context() -> Iterator[BrowserContext]:
    """A fresh browser profile that trusts the test server's self-signed certificate."""
    with chromium() as browser:
        context = browser.new_context(ignore_https_errors=True, accept_downloads=True)
        try:
            yield context
        finally:
            context.close()


def log_in_page(page: Page, base: str, address: str, password: str) -> None:
    """Log in on the front page with the labelled fields, as a keyboard user does; returns
    on the account page."""
    page.goto(base + "/")
    page.get_by_label("Email address").fill(address)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(base + "/account")


def browser_login(context: BrowserContext, base: str, address: str, password: str) -> Page:
    """A new page logged in as `address`, on its account page."""
    page = context.new_page()
    log_in_page(page, base, address, password)
    return page
