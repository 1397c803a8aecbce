"""The operator's view in a real browser: Debian's chromium driven by Playwright against a real
webhookd, opened with ``webhookd dashboard-link --admin``, with real aiohttp receivers and real API
calls; and the link and session hardening every dashboard visitor gets (a GET that redeems nothing,
Sign out)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.integration.dashboard_harness import (
    FAST,
    SCOPES,
    open_link,
    running_platform,
    signed_in,
    signed_in_with,
    verified,
)
from tests.integration.harness import eventually, provision_key, query, running_receiver
from webhookd.crypto import hash_api_key

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

OPERATOR = "/dashboard/operator"


async def test_the_operator_sees_every_customer_and_re_enables_another_customers_subscription(
    tmp_path: Path, browser: Browser, screenshots: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every line webhookd and uvicorn log (aiosqlite's debug lines, from its own threads, are left out).
    for logger in ("webhookd", "uvicorn"):
        caplog.set_level(logging.DEBUG, logger=logger)
    acme = await provision_key(tmp_path / "w.db", "acme", SCOPES, "Acme Dental")
    globex = await provision_key(tmp_path / "w.db", "globex", SCOPES, "Globex Voice")
    up = False
    async with running_receiver() as receiver, running_platform(tmp_path, **FAST) as platform:
        receiver.status_for = lambda request: 200 if up or "/acme" in request.path else 500
        await platform.subscribe(acme, receiver.url + "/acme")
        sub = await platform.subscribe(globex, receiver.url + "/globex")
        events = [await platform.publish(globex, n) for n in range(2)]
        await eventually(lambda: platform.state(sub["id"]) == 0, timeout_s=20)
        assert set(platform.statuses(sub["id"])) == {"parked"}

        link = await platform.operator_link()
        operator = await signed_in_with(browser, platform, link, home=OPERATOR)
        page = operator.page
        rows = page.locator("table.customers tbody tr")
        assert [await row.locator("td").first.inner_text() for row in await rows.all()] == ["acme", "globex"]
        cells = await rows.nth(1).locator("td").all_inner_texts()
        assert cells == ["globex", "Globex Voice", "1", "0", "1", "1"]  # 1 subscription, 1 disabled, 1 key
        card = page.locator(".troubled .card")
        assert await card.count() == 1  # acme's healthy subscription is not troubled
        assert await card.locator(".state").inner_text() == "Disabled"
        assert "consecutive failures" in await card.inner_text() and "globex" in await card.inner_text()
        assert sub["url"] in await card.inner_text()
        (backlog,) = await page.locator("table.backlogs tbody tr").all()  # acme has none
        assert await backlog.locator("td").all_inner_texts() == [sub["url"], "globex", "0", "0", "0", "2", ""]
        await page.screenshot(path=screenshots / "operator.png", full_page=True)

        csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
        wrong = f"{platform.base}{OPERATOR}/customers/acme/subscriptions/{sub['id']}/enable"  # not acme's
        refused = await operator.context.request.post(wrong, form={"csrf": csrf or ""})
        assert refused.status == 404 and platform.state(sub["id"]) == 0
        customer_page = await operator.context.request.get(
            f"{platform.base}/dashboard/subscriptions/{sub['id']}"
        )
        assert customer_page.status == 404 and sub["url"] not in await customer_page.text()

        up = True
        await page.click(".troubled button:text-is('Re-enable')")
        assert page.url == platform.base + OPERATOR
        assert "Re-enabled" in await page.locator(".notice").inner_text()
        wanted = {event["id"] for event in events}
        await receiver.wait_for(lambda got: wanted <= verified(got, sub["secret"]))
        await page.reload()
        assert await page.locator(".troubled .card").count() == 0 and platform.state(sub["id"]) == 1
        cookie = next(c for c in await operator.context.cookies() if c["name"] == "webhookd_dashboard")
        await operator.context.close()
    for secret in (link.split("token=", 1)[1], cookie["value"]):
        assert secret not in caplog.text


async def test_a_revoked_key_is_refused_by_the_api_at_once(tmp_path: Path, browser: Browser) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    kept = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    async with running_platform(tmp_path) as platform:
        assert (await platform.call(key, "GET", "/api/v1/webhook-subscriptions"))[0] == 200  # now cached
        key_id = query(platform.db, "SELECT id FROM api_keys WHERE key_hash = ?", hash_api_key(key))[0][0]
        used = "SELECT id FROM api_keys WHERE last_used_at IS NOT NULL"
        await eventually(lambda: query(platform.db, used) == [(key_id,)])  # recorded in the background
        operator = await signed_in_with(browser, platform, await platform.operator_link(), home=OPERATOR)
        page = operator.page
        await page.click("a[href='/dashboard/operator/customers/acme']")
        assert await page.locator("table.keys tbody tr").count() == 2
        assert key not in await page.content() and kept not in await page.content()  # secrets never shown
        row = page.locator("table.keys tbody tr", has_text=key_id)
        other = page.locator("table.keys tbody tr", has_not_text=key_id)
        assert await row.locator(".last-used").inner_text() != ""
        assert await other.locator(".last-used").inner_text() == ""  # kept has not been used yet

        await page.click(f"form[action$='/keys/{key_id}/revoke'] button:text-is('Revoke')")

        assert f"Revoked key {key_id}" in await page.locator(".notice").inner_text()
        status, body = await platform.call(key, "GET", "/api/v1/webhook-subscriptions")
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert (await platform.call(kept, "GET", "/api/v1/webhook-subscriptions"))[0] == 200
        revoked = page.locator("table.keys tr", has_text=key_id)
        assert await revoked.locator(".revoked").inner_text() != ""
        assert await revoked.locator("button").count() == 0
        await operator.context.close()


async def test_a_customer_session_gets_404_on_every_operator_page_and_action(
    tmp_path: Path, browser: Browser
) -> None:
    acme = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    globex = await provision_key(tmp_path / "w.db", "globex", SCOPES)
    async with running_platform(tmp_path, **FAST) as platform:
        sub = await platform.subscribe(globex, "http://127.0.0.1:9/globex-only")
        key_id = query(platform.db, "SELECT id FROM api_keys WHERE customer_id = 'globex'")[0][0]
        customer = await signed_in(browser, platform, acme)
        csrf = await customer.page.locator("input[name=csrf]").first.get_attribute("value")
        nobody = await browser.new_context()
        pages = [OPERATOR, f"{OPERATOR}/customers/globex", f"{OPERATOR}/customers/acme"]
        actions = [
            f"{OPERATOR}/customers/globex/subscriptions/{sub['id']}/enable",
            f"{OPERATOR}/customers/globex/keys/{key_id}/revoke",
        ]
        for visitor, status in ((customer.context, 404), (nobody, 401)):
            for path in pages:
                response = await visitor.request.get(platform.base + path)
                text = await response.text()
                assert (response.status, "globex" in text, key_id in text) == (status, False, False), path
            for path in actions:
                response = await visitor.request.post(platform.base + path, form={"csrf": csrf or ""})
                text = await response.text()
                assert (response.status, "globex-only" in text) == (status, False), path
        assert query(platform.db, "SELECT revoked_at FROM api_keys WHERE id = ?", key_id) == [(None,)]
        assert (await platform.call(globex, "GET", "/api/v1/webhook-subscriptions"))[0] == 200
        for context in (customer.context, nobody):
            await context.close()


async def test_a_link_is_used_only_by_its_open_dashboard_button_and_only_once(
    tmp_path: Path, browser: Browser
) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    async with running_platform(tmp_path) as platform:
        link = await platform.link(key)
        context = await browser.new_context()
        page = await context.new_page()
        for _ in range(2):  # a link previewer's GET, then the person's: neither uses the link up
            response = await page.goto(link)
            assert response is not None and response.status == 200
            assert await page.locator("button:text-is('Open dashboard')").count() == 1
        assert query(platform.db, "SELECT used_at FROM dashboard_links") == [(None,)]
        assert await context.cookies() == []

        assert await open_link(page, link) == 200 and page.url == platform.base + "/dashboard"
        again = await browser.new_context()
        refused = await again.request.post(
            platform.base + "/dashboard/login", form={"token": link.split("token=", 1)[1]}
        )
        assert refused.status == 401 and "expired or has been used" in await refused.text()
        assert await again.cookies() == []
        nothing = await again.request.post(platform.base + "/dashboard/login", form={})
        assert nothing.status == 401
        for opened in (context, again):
            await opened.close()


async def test_sign_out_ends_the_session_even_for_a_copy_of_its_cookie(
    tmp_path: Path, browser: Browser
) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    async with running_platform(tmp_path) as platform:
        await platform.subscribe(key, "http://127.0.0.1:9/acme-only")
        customer = await signed_in(browser, platform, key)
        cookie = next(c for c in await customer.context.cookies() if c["name"] == "webhookd_dashboard")
        copy = await browser.new_context()
        await copy.add_cookies([cookie])
        assert (await copy.request.get(platform.base + "/dashboard")).status == 200

        async with customer.page.expect_navigation():
            await customer.page.click("button:text-is('Sign out')")

        assert "You have signed out" in await customer.page.content()
        assert [c for c in await customer.context.cookies() if c["name"] == "webhookd_dashboard"] == []
        after = await copy.request.get(platform.base + "/dashboard")
        text = await after.text()
        assert (after.status, "acme-only" in text, "signed out" in text) == (401, False, True)
        for context in (customer.context, copy):
            await context.close()
