"""Debian's Chromium under Playwright, as the dashboard's browser tests and render benchmark use it.

Playwright cannot download a browser of its own here: it drives /usr/bin/chromium (installed by
scripts/ensure-browser; MESH_CHROMIUM names another), headless, without a sandbox (root), a GPU
or anything that reaches the network on its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("MESH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class BrowserMissing(RuntimeError):
    pass


def launch_chromium(playwright: Any, *extra_args: str) -> Any:
    """A headless Chromium (Playwright's Browser) from CHROMIUM."""
    if not Path(CHROMIUM).is_file():
        raise BrowserMissing(f"No Chromium at {CHROMIUM}: run scripts/ensure-browser (apt-get install chromium).")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args], headless=True)


def sign_in(page: Any, base_url: str, username: str, password: str, path: str = "/dashboard/") -> None:
    """Open `path`, which sends a signed-out browser to the dashboard's login page, and sign in there."""
    page.goto(f"{base_url}{path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
