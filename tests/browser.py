"""A real headless browser for the page tests: Debian's chromium driven by Playwright.

Tests that open a page call :func:`open_browser`; where no chromium or no Playwright is installed they skip with the
reason (CI installs chromium in .ci/run; ``apt-get install -y chromium`` does it by hand).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest


def chromium_path() -> str | None:
    """The chromium executable on PATH (Debian's package installs /usr/bin/chromium), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Browser:
    """One page in a headless chromium, and every console error or uncaught exception it logged."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def screenshot(self, path: str, full_page: bool = True) -> None:
        """Save what the page shows now as a PNG."""
        self.page.screenshot(path=path, full_page=full_page)


@contextmanager
def open_browser(width: int = 1280, height: int = 900) -> Iterator[Browser]:
    """A fresh headless page; skips the calling test with a reason where no browser can run."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install camrt[dev])")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            opened = Browser(page)
            page.on("console", lambda message: opened.errors.append(message.text)
                    if message.type == "error" else None)
            page.on("pageerror", lambda error: opened.errors.append(str(error)))
            yield opened
        finally:
            browser.close()
