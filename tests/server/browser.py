"""Debian's headless Chromium through Playwright, and where pages' screenshots are kept.

Screenshots are test artifacts: `$MAILSTACK_TEST_ARTIFACTS/screenshots/` (default
`build/test-artifacts/screenshots/` in the repository, ignored by git), one PNG per page.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

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
    base = os.environ.get("MAILSTACK_TEST_ARTIFACTS", str(REPOSITORY / "build/test-artifacts"))
    folder = Path(base) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page: Page, name: str) -> Path:
    """The whole page as `<name>.png` among the artifacts."""
    path = screenshots() / f"{name}.png"
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
