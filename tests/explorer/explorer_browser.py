"""Headless Chromium for the explorer tests: Debian's /usr/bin/chromium driven by Playwright.

No browser is ever downloaded (`playwright install` is never run); set MEDFED_CHROMIUM to use
another binary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None when none is installed."""
    env = os.environ.get("MEDFED_CHROMIUM")
    if env:
        return env
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name) if not name.startswith("/") else (name if os.path.exists(name) else None)
        if found:
            return found
    return None


@contextmanager
def launch_browser() -> Iterator[Any]:
    """A Playwright Chromium browser on the system executable (closed on exit)."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("chromium not found: apt-get install chromium (or set MEDFED_CHROMIUM)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
