"""The integration tests' fixtures: Debian's chromium driven by Playwright for the dashboard's browser
tests, where their screenshots go, and a PostgreSQL schema per test."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.integration.harness import psql

CHROMIUM = shutil.which("chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        reason = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("WEBHOOKD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}, and WEBHOOKD_REQUIRE_BROWSER=1")
        pytest.skip(f"{reason}; set WEBHOOKD_REQUIRE_BROWSER=1 to fail instead")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: the README's folder when asked to refresh it, else the test's own."""
    return SCREENSHOTS if os.environ.get("WEBHOOKD_REFRESH_SCREENSHOTS") == "1" else tmp_path


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh PostgreSQL schema for this test, dropped afterwards. Skips without a server unless
    CI requires it (WEBHOOKD_REQUIRE_POSTGRES=1)."""
    name = f"webhookd_it_{secrets.token_hex(4)}"
    made = psql(f"CREATE SCHEMA {name}")
    if made.returncode != 0:
        if os.environ.get("WEBHOOKD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here but did not answer: {made.stderr.strip()}")
        pytest.skip(f"PostgreSQL is not available: {made.stderr.strip()}")
    try:
        yield name
    finally:
        psql(f"DROP SCHEMA {name} CASCADE")
