"""What the dashboard's browser tests share: a running webhookd spoken to as a customer's platform, a
customer signed in through a link, and Debian's chromium driven by Playwright. Without chromium the
browser tests skip, unless ``WEBHOOKD_REQUIRE_BROWSER=1`` (CI), where they fail.
``WEBHOOKD_REFRESH_SCREENSHOTS=1`` writes the screenshots to docs/screenshots."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from playwright.async_api import Browser, BrowserContext, Page
from standardwebhooks.webhooks import Webhook

from tests.integration.harness import (
    MovableClock,
    Received,
    auth,
    query,
    running_server,
    server_settings,
    subprocess_env,
    webhookd_command,
)
from webhookd.models import Scope

SCOPES = {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS}
FAST = {"WEBHOOKD_RETRY_SCHEDULE": ",".join(["0"] + ["0.05"] * 9), "WEBHOOKD_DISABLE_AFTER_FAILURES": "3"}
"""Quick retries, and three straight failures disable a subscription."""
ONE_ATTEMPT = {"WEBHOOKD_RETRY_SCHEDULE": "0"}
"""A delivery that fails once has failed for good (until retried or recovered)."""


@dataclass
class Platform:
    """A running webhookd with a customer's API key, spoken to as that customer's platform does."""

    http: aiohttp.ClientSession
    base: str
    db: Path

    async def call(self, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, headers=auth(key), json=body) as response:
            return response.status, await response.json()

    async def subscribe(self, key: str, url: str) -> dict[str, Any]:
        status, sub = await self.call(
            key, "POST", "/api/v1/webhook-subscriptions", {"url": url, "events": ["call.completed"]}
        )
        assert status == 201, sub
        return dict(sub)

    async def publish(self, key: str, n: int) -> dict[str, Any]:
        status, event = await self.call(
            key, "POST", "/api/v1/events", {"type": "call.completed", "data": {"call": n}}
        )
        assert status == 202, event
        return dict(event)

    async def link(self, key: str) -> str:
        status, link = await self.call(key, "POST", "/api/v1/dashboard-links")
        assert status == 201, link
        return str(link["url"])

    async def operator_link(self) -> str:
        """A link to the operator's view, made by ``webhookd dashboard-link --admin --json``."""
        port = urlsplit(self.base).port
        env = subprocess_env({"WEBHOOKD_DATABASE_URL": f"sqlite:///{self.db}", "WEBHOOKD_PORT": str(port)})
        command = webhookd_command("dashboard-link", "--admin", "--json")
        done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        url = str(orjson.loads(done.stdout)["url"])
        assert url.startswith(self.base + "/dashboard/login?token=")
        return url

    def state(self, sub_id: str) -> int:
        return int(query(self.db, "SELECT is_active FROM subscriptions WHERE id = ?", sub_id)[0][0])

    def statuses(self, sub_id: str) -> list[str]:
        return [
            row[0]
            for row in query(self.db, "SELECT status FROM deliveries WHERE subscription_id = ?", sub_id)
        ]


@dataclass
class Customer:
    context: BrowserContext
    page: Page


async def signed_in(browser: Browser, platform: Platform, key: str) -> Customer:
    return await signed_in_with(browser, platform, await platform.link(key))


async def signed_in_with(
    browser: Browser, platform: Platform, link: str, home: str = "/dashboard"
) -> Customer:
    """A new browser that opens ``link`` and presses Open dashboard, landing on ``home``."""
    context = await browser.new_context(viewport={"width": 1000, "height": 800})
    page = await context.new_page()
    await open_link(page, link)
    assert page.url == platform.base + home  # the token is gone from the address bar
    return Customer(context, page)


async def open_link(page: Page, link: str) -> int:
    """Open ``link`` (a page that redeems nothing) and press its Open dashboard button; returns the
    status of the page the button leads to."""
    shown = await page.goto(link)
    assert shown is not None and shown.status == 200
    async with page.expect_navigation() as navigation:
        await page.click("button:text-is('Open dashboard')")
    response = await navigation.value
    assert response is not None
    return response.status


@contextlib.asynccontextmanager
async def running_platform(
    tmp_path: Path, clock: MovableClock | None = None, **env: str
) -> AsyncIterator[Platform]:
    db = tmp_path / "w.db"
    settings = server_settings(db, **env)
    async with (
        running_server(settings, clock=clock or MovableClock()) as base,
        aiohttp.ClientSession() as http,
    ):
        yield Platform(http, base, db)


def verified(received: list[Received], secret: str) -> set[str]:
    """The ids of the events among ``received`` that were answered 200, each verified as signed with
    ``secret`` (the verification raises otherwise)."""
    hook = Webhook(secret)
    return {hook.verify(r.body, r.headers)["id"] for r in received if r.status == 200}


async def eventually_text(page: Page, selector: str, text: str) -> None:
    """Reload ``page`` until ``selector`` reads ``text`` (the store records an attempt just after the
    receiver has answered it)."""

    async def shows() -> bool:
        return await page.locator(selector).first.inner_text() == text

    for _ in range(100):
        if await shows():
            return
        await page.reload()
    assert await shows(), f"{selector} never read {text!r}"
