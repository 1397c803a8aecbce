"""The integration tests' fixtures: Debian's chromium driven by Playwright for the dashboard's browser
tests, and where their screenshots go."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

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
