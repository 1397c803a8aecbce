"""The dashboard in a real browser: Debian's chromium driven by Playwright against a real webhookd, with
real aiohttp receivers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.integration.dashboard_harness import (
    FAST,
    ONE_ATTEMPT,
    SCOPES,
    Platform,
    eventually_text,
    open_link,
    running_platform,
    signed_in,
    signed_in_with,
    verified,
)
from tests.integration.harness import (
    MovableClock,
    Receiver,
    eventually,
    provision_key,
    query,
    running_receiver,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# -- a disabled subscription, re-enabled -------------------------------------------------------


async def test_a_customer_re_enables_a_disabled_subscription_and_its_deliveries_arrive(
    tmp_path: Path, browser: Browser, screenshots: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES, "Acme Dental")
    up = False
    async with running_receiver() as receiver, running_platform(tmp_path, **FAST) as platform:
        receiver.status_for = lambda _: 200 if up else 500
        sub = await platform.subscribe(key, receiver.url)
        events = [await platform.publish(key, n) for n in range(2)]
        await eventually(lambda: platform.state(sub["id"]) == 0, timeout_s=20)
        assert set(platform.statuses(sub["id"])) == {"parked"}

        link = await platform.link(key)
        customer = await signed_in(browser, platform, key)
        page = customer.page
        card = page.locator(".card", has_text=receiver.url)
        assert await card.locator(".state").inner_text() == "Disabled"
        assert "consecutive failures" in await card.inner_text()
        await page.screenshot(path=screenshots / "subscriptions.png", full_page=True)

        await page.click(f"a[href='/dashboard/subscriptions/{sub['id']}']")
        assert await page.locator(".attempts td", has_text="500").count() >= 3
        await page.screenshot(path=screenshots / "subscription.png", full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})  # a phone
        await page.screenshot(path=screenshots / "subscription-phone.png")
        await page.set_viewport_size({"width": 1000, "height": 800})

        up = True
        await page.click("button:text-is('Re-enable')")
        assert "Re-enabled" in await page.locator(".notice").inner_text()
        wanted = {event["id"] for event in events}
        await receiver.wait_for(
            lambda got: wanted <= {r.headers["webhook-id"] for r in got if r.status == 200}
        )
        assert wanted <= verified(receiver.requests, sub["secret"])
        await page.reload()
        assert await page.locator(".state").inner_text() == "Active"

        cookie = next(c for c in await customer.context.cookies() if c["name"] == "webhookd_dashboard")
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Lax", "/dashboard")
        await customer.context.close()
    token = link.split("token=", 1)[1]
    for secret in (token, sub["secret"], cookie["value"]):
        assert secret not in caplog.text


# -- retry, rotate and recover -----------------------------------------------------------------


async def test_retry_rotate_secret_and_recover_failed_from_the_pages(
    tmp_path: Path, browser: Browser, screenshots: Path
) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    up = False
    async with running_receiver() as receiver, running_platform(tmp_path, **ONE_ATTEMPT) as platform:
        receiver.status_for = lambda _: 200 if up else 500
        sub = await platform.subscribe(key, receiver.url)
        started = datetime.now(UTC)
        first, *rest = [await platform.publish(key, n) for n in range(3)]
        await eventually(lambda: platform.statuses(sub["id"]) == ["failed"] * 3)
        up = True
        customer = await signed_in(browser, platform, key)
        page = customer.page
        sub_page = f"{platform.base}/dashboard/subscriptions/{sub['id']}"
        await page.goto(sub_page)

        await page.click("button:text-is('Rotate secret')")
        secret = await page.locator("#new-secret").inner_text()
        assert secret.startswith("whsec_") and secret != sub["secret"]
        await page.reload()  # the page the POST redirects to shows the secret; no later one does
        assert await page.locator("#new-secret").count() == 0

        delivery_id = query(platform.db, "SELECT id FROM deliveries WHERE event_id = ?", first["id"])[0][0]
        await page.click(f"a[href='/dashboard/deliveries/{delivery_id}']")
        await page.click("button:text-is('Retry')")
        assert "Retrying now" in await page.locator(".notice").inner_text()
        await receiver.wait_for(lambda got: first["id"] in verified(got, secret))
        await page.goto(f"{platform.base}/dashboard/deliveries/{delivery_id}")
        await eventually_text(page, ".status", "delivered")
        await page.screenshot(path=screenshots / "delivery.png", full_page=True)

        await page.click("text=Back to its subscription")
        since = started - timedelta(minutes=1)
        await page.fill("input[name=since]", since.strftime("%Y-%m-%dT%H:%M"))
        await page.click("button:text-is('Recover failed')")
        assert "Re-queued 2 failed deliveries" in await page.locator(".notice").inner_text()
        wanted = {event["id"] for event in rest}
        await receiver.wait_for(lambda got: wanted <= verified(got, secret))
        await customer.context.close()


# -- who sees what -----------------------------------------------------------------------------


async def _acme_pages(platform: Platform, key: str, receiver: Receiver) -> tuple[list[str], list[str], str]:
    """acme's subscription with one delivery attempted; returns its dashboard pages, its forms'
    actions, and the subscription's URL (which must show on no other customer's page)."""
    sub = await platform.subscribe(key, receiver.url + "/acme-only")
    event = await platform.publish(key, 1)
    await receiver.wait_for(lambda got: any(r.headers["webhook-id"] == event["id"] for r in got))
    delivery_id = query(platform.db, "SELECT id FROM deliveries WHERE event_id = ?", event["id"])[0][0]
    sub_page, delivery_page = f"/dashboard/subscriptions/{sub['id']}", f"/dashboard/deliveries/{delivery_id}"
    pages = ["/dashboard", sub_page, f"{sub_page}?status=delivered", delivery_page]
    actions = [f"{sub_page}/{a}" for a in ("enable", "rotate-secret", "test", "recover", "edit")]
    return pages, [*actions, f"{delivery_page}/retry"], sub["url"]


async def test_another_customers_session_and_no_session_see_none_of_its_data(
    tmp_path: Path, browser: Browser
) -> None:
    acme = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    globex = await provision_key(tmp_path / "w.db", "globex", SCOPES)
    async with running_receiver() as receiver, running_platform(tmp_path) as platform:
        pages, actions, acme_url = await _acme_pages(platform, acme, receiver)
        await platform.subscribe(globex, receiver.url + "/globex")
        owner = await signed_in(browser, platform, acme)
        for path in pages:  # the pages are there, and show acme's subscription to acme
            response = await owner.page.goto(platform.base + path)
            assert response is not None and response.status == 200 and acme_url in await owner.page.content()

        other = await signed_in(browser, platform, globex)
        await other.page.click("a[href^='/dashboard/subscriptions/']")
        csrf = await other.page.locator("input[name=csrf]").first.get_attribute("value")
        nobody = await browser.new_context()
        for visitor, status in ((other.context, 404), (nobody, 401)):
            for path in pages[1:]:
                response = await visitor.request.get(platform.base + path)
                assert (response.status, acme_url in await response.text()) == (status, False), path
            for path in actions:
                form = {"csrf": csrf or "", "since": "2020-01-01T00:00"}
                response = await visitor.request.post(platform.base + path, form=form)
                assert (response.status, acme_url in await response.text()) == (status, False), path
        listing = await other.context.request.get(platform.base + "/dashboard")
        assert listing.status == 200 and acme_url not in await listing.text()
        no_session = await nobody.request.get(platform.base + "/dashboard")
        assert no_session.status == 401 and "webhookd dashboard-link --customer" in await no_session.text()
        for context in (owner.context, other.context, nobody):
            await context.close()


# -- links and forms ---------------------------------------------------------------------------


async def _refused(browser: Browser, link: str, hidden: str) -> None:
    """Opening ``link`` in a fresh browser gives the how-to page, no cookie and nothing of ``hidden``."""
    context = await browser.new_context()
    page = await context.new_page()
    assert await open_link(page, link) == 401
    text = await page.content()
    assert "expired or has been used" in text and "webhookd dashboard-link --customer" in text
    assert hidden not in text and await context.cookies() == []
    await context.close()


async def test_an_expired_link_and_a_used_link_are_refused(tmp_path: Path, browser: Browser) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    clock = MovableClock()
    async with running_receiver() as receiver, running_platform(tmp_path, clock) as platform:
        acme_url = (await platform.subscribe(key, receiver.url))["url"]
        used, nearly, expiring = [await platform.link(key) for _ in range(3)]
        first = await signed_in_with(browser, platform, used)
        await _refused(browser, used, acme_url)  # well within its 15 minutes, but used

        clock.offset = timedelta(minutes=14, seconds=50)
        second = await signed_in_with(browser, platform, nearly)
        clock.offset = timedelta(minutes=15, seconds=1)
        await _refused(browser, expiring, acme_url)
        for context in (first.context, second.context):
            await context.close()


async def test_a_form_without_its_csrf_token_is_refused(tmp_path: Path, browser: Browser) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    async with running_platform(tmp_path, **FAST) as platform:
        sub = await platform.subscribe(key, "http://127.0.0.1:9/unreachable")
        customer = await signed_in(browser, platform, key)
        await customer.page.goto(f"{platform.base}/dashboard/subscriptions/{sub['id']}")
        token = await customer.page.locator("input[name=csrf]").first.get_attribute("value")
        rotate = f"{platform.base}/dashboard/subscriptions/{sub['id']}/rotate-secret"

        for form in ({}, {"csrf": ""}, {"csrf": (token or "")[:-2] + "AA"}):
            response = await customer.context.request.post(rotate, form=form)
            assert response.status == 403 and "reload the page" in await response.text()
        assert query(platform.db, "SELECT previous_secret FROM subscriptions")[0][0] is None
        response = await customer.context.request.post(rotate, form={"csrf": token or ""})
        assert response.status == 200 and "whsec_" in await response.text()
        await customer.context.close()
