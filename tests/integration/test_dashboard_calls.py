"""The dashboard's Calls and Events pages in a real browser: real signed carrier callbacks into a real
webhookd, delivered to a real aiohttp receiver, then read by the customer in Debian's chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.integration.carrier_signing import credentials, signed_headers
from tests.integration.dashboard_harness import SCOPES, Platform, running_platform, signed_in
from tests.integration.harness import eventually, provision_key, provision_source, query, running_receiver
from tests.integration.test_carrier_ingest import twilio
from webhookd.models import CALL_EVENT_TYPES, Carrier

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SID = "CA5ca1ab1e000000000000000000000001"
CALL_PAGE = f"/dashboard/calls/twilio:{SID}"
LIFECYCLE = ("01_initiated.form", "02_ringing.form", "03_in-progress.form", "04_completed.form")


async def post_callback(platform: Platform, source_id: str, body: bytes) -> None:
    url = f"{platform.base}/ingest/twilio/{source_id}"
    async with platform.http.post(
        url, data=body, headers=signed_headers(Carrier.TWILIO, url, body)
    ) as response:
        assert response.status == 200, await response.text()


async def a_delivered_call(platform: Platform, key: str, source_id: str, hook: str) -> None:
    """Twilio's lifecycle of one call to a receiver subscribed to every call event, with the ringing
    callback repeated (dropped) and a late one (recorded, no event); waits until all were delivered."""
    status, _ = await platform.call(
        key, "POST", "/api/v1/webhook-subscriptions", {"url": hook, "events": list(CALL_EVENT_TYPES)}
    )
    assert status == 201
    for body in [*(twilio(name) for name in LIFECYCLE), twilio("02_ringing.form")]:
        await post_callback(platform, source_id, body)
    await post_callback(platform, source_id, twilio("02_ringing.form", SequenceNumber="4"))
    await eventually(
        lambda: [r[0] for r in query(platform.db, "SELECT status FROM deliveries")] == ["delivered"] * 4
    )


async def test_a_customer_reads_a_calls_timeline_and_the_event_log(
    tmp_path: Path, browser: Browser, screenshots: Path
) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    source_id = await provision_source(tmp_path / "w.db", "acme", Carrier.TWILIO, credentials(Carrier.TWILIO))
    async with running_receiver() as receiver, running_platform(tmp_path) as platform:
        await a_delivered_call(platform, key, source_id, receiver.url)
        customer = await signed_in(browser, platform, key)
        page = customer.page

        await page.click("nav a:text-is('Calls')")
        card = page.locator(".card", has_text=f"twilio:{SID}")
        assert await card.locator(".status").inner_text() == "completed"
        assert "5 callbacks, 4 events" in await card.inner_text()
        await page.click(f"a[href='{CALL_PAGE}']")
        rows = page.locator("table.callbacks tbody tr")
        assert [await rows.nth(n).locator("td").nth(2).inner_text() for n in range(5)] == [
            "initiated",
            "ringing",
            "in-progress",
            "completed",
            "ringing",
        ]
        assert "no event" in await rows.nth(4).inner_text()
        assert await page.locator(".no-event").count() == 1
        events = page.locator(".card.event strong")
        assert await events.all_inner_texts() == [
            "call.initiating",
            "call.ringing",
            "call.in_progress",
            "call.completed",
        ]
        links = page.locator(".went a[href^='/dashboard/deliveries/']")
        assert await links.count() == 4
        assert await page.locator(".went .status").all_inner_texts() == ["delivered"] * 4
        await page.screenshot(path=screenshots / "call.png", full_page=True)

        delivery_id = await links.last.inner_text()
        await links.last.click()
        assert page.url == f"{platform.base}/dashboard/deliveries/{delivery_id}"
        assert await page.locator("h1").inner_text() == f"Delivery {delivery_id}"
        assert await page.locator(".status").first.inner_text() == "delivered"

        await page.click("nav a:text-is('Events')")
        payloads = page.locator("pre.payload")
        assert await payloads.count() == 4
        newest = await payloads.first.inner_text()
        assert '"type": "call.completed"' in newest and f'"carrier_call_id": "{SID}"' in newest
        assert await page.locator(".card.event .went a").count() == 4
        await customer.context.close()


async def test_another_customers_session_and_no_session_see_none_of_a_call(
    tmp_path: Path, browser: Browser
) -> None:
    acme = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    globex = await provision_key(tmp_path / "w.db", "globex", SCOPES)
    source_id = await provision_source(tmp_path / "w.db", "acme", Carrier.TWILIO, credentials(Carrier.TWILIO))
    async with running_receiver() as receiver, running_platform(tmp_path) as platform:
        await a_delivered_call(platform, acme, source_id, receiver.url)
        owner = await signed_in(browser, platform, acme)
        other = await signed_in(browser, platform, globex)
        nobody = await browser.new_context()
        pages = ["/dashboard/calls", CALL_PAGE, "/dashboard/events"]
        for path in pages:  # acme sees its call on each page
            response = await owner.context.request.get(platform.base + path)
            assert response.status == 200 and SID in await response.text(), path

        for visitor, statuses in ((other.context, (200, 404, 200)), (nobody, (401, 401, 401))):
            for path, status in zip(pages, statuses, strict=True):
                response = await visitor.request.get(platform.base + path)
                text = await response.text()
                assert (response.status, SID in text, "call.completed" in text) == (status, False, False), (
                    path
                )
        malformed = await owner.context.request.get(f"{platform.base}/dashboard/calls/{SID}")
        assert malformed.status == 400 and "carrier:call_id" in await malformed.text()
        for path in ("/dashboard/calls?cursor=evt_1", "/dashboard/events?cursor=twilio:CA1"):
            foreign = await owner.context.request.get(platform.base + path)
            assert foreign.status == 400 and "start from the first page" in await foreign.text(), path
        for context in (owner.context, other.context, nobody):
            await context.close()
