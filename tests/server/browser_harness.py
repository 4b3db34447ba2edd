"""Headless Chromium (Debian's /usr/bin/chromium) through Playwright, closed however a test
ends, and screenshots kept as test artifacts: MAILSTACK_TEST_ARTIFACTS (default
test-artifacts/ in the current folder), screenshots/<test module>-<name>.png."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def artifacts() -> Path:
    folder = Path(os.environ.get("MAILSTACK_TEST_ARTIFACTS", "test-artifacts")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page: Page, module: str, name: str) -> Path:
    """Save the whole page as <module>-<name>.png; returns the file."""
    path = artifacts() / f"{module.rpartition('.')[2]}-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def browser_context() -> Iterator[BrowserContext]:
    """A fresh browser profile that trusts the test server's self-signed certificate."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(ignore_https_errors=True, accept_downloads=True)
            try:
                yield context
            finally:
                context.close()
        finally:
            browser.close()


def browser_login(context: BrowserContext, base: str, address: str, password: str) -> Page:
    """A page logged in as `address`, on its account page."""
    page = context.new_page()
    page.goto(base + "/")
    page.get_by_label("Email address").fill(address)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(base + "/account")
    return page
