"""Fixtures for the browser tests: one headless Chromium per session, a fresh browser context per test.

The pages are served by pytest-django's ``live_server`` (a real HTTP server thread on the test database), so
every test here runs with ``transactional_db``: the data a test creates must be committed for the server
thread to see it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path("/tmp/shots")
TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    # Playwright's sync API runs an asyncio event loop in a greenlet of the main thread, and between calls it
    # leaves that loop marked as running (see playwright/sync_api/_context_manager.py). Django's ORM then
    # believes it is called from async code and raises SynchronousOnlyOperation for every query the test
    # makes (creating users, asserting on the database). The test code is plain synchronous code and the
    # live server answers from its own thread, so the check is a false alarm here: switch it off, but only
    # while the browser is alive, and restore the previous value afterwards.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            expect.set_options(timeout=TIMEOUT_MS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser: Browser, live_server: object) -> Iterator[Page]:
    """A page in a new browser context (own cookies, so no session leaks between tests)."""
    context = browser.new_context(base_url=str(live_server), viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shots() -> Path:
    """Folder for screenshots, kept after the run so that a person can look at them."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
