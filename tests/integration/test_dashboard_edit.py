"""The subscription page's edit form, and redirect-after-POST: in Debian's chromium against a real
webhookd, with real receivers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.integration.dashboard_harness import (
    SCOPES,
    Customer,
    Platform,
    running_platform,
    signed_in,
    verified,
)
from tests.integration.harness import eventually, provision_key, query, running_receiver

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

GUARDED = {"WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS": "false", "WEBHOOKD_ALLOWED_CIDRS": "127.0.0.1/32"}
"""The SSRF guard on, with only the test receivers' address let through."""


async def _fill(page: Page, url: str, events: set[str], rate: str, ordered: bool) -> None:
    """Fill the edit form, opening it first."""
    if await page.locator("details.edit").get_attribute("open") is None:
        await page.click("summary:text-is('Edit')")
    await page.fill("input[name=url]", url)
    for box in await page.locator("input[name^='event:']").all():
        name = await box.get_attribute("name") or ""
        await box.set_checked(name.removeprefix("event:") in events)
    await page.fill("input[name=rate_limit_per_second]", rate)
    await page.locator("input[name=ordered]").set_checked(ordered)


async def _checked_events(page: Page) -> set[str]:
    boxes = page.locator("input[name^='event:']:checked")
    return {(await box.get_attribute("name") or "").removeprefix("event:") for box in await boxes.all()}


async def _save(page: Page) -> int:
    """Press Save; the status of the page it lands on."""
    async with page.expect_navigation() as landed:
        await page.click("button:text-is('Save')")
    response = await landed.value
    assert response is not None
    return response.status


async def _sub(platform: Platform, key: str, sub_id: str) -> dict[str, Any]:
    status, sub = await platform.call(key, "GET", f"/api/v1/webhook-subscriptions/{sub_id}")
    assert status == 200
    return dict(sub)


async def _opened(browser: Browser, platform: Platform, key: str, sub_id: str) -> Customer:
    customer = await signed_in(browser, platform, key)
    await customer.page.goto(f"{platform.base}/dashboard/subscriptions/{sub_id}")
    return customer


# -- editing -----------------------------------------------------------------------------------


async def test_the_edit_form_changes_url_events_rate_limit_and_ordering(
    tmp_path: Path, browser: Browser, screenshots: Path
) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    async with (
        running_receiver() as old,
        running_receiver() as new,
        running_platform(tmp_path, **GUARDED) as platform,
    ):
        sub = await platform.subscribe(key, old.url)
        customer = await _opened(browser, platform, key, sub["id"])
        page = customer.page
        await page.click("summary:text-is('Edit')")
        assert await page.input_value("input[name=url]") == old.url
        assert await page.locator("input[name='event:call.completed']").is_checked()
        await page.screenshot(path=screenshots / "subscription-edit.png", full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing runs off the side
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await page.set_viewport_size({"width": 1000, "height": 800})

        await _fill(page, new.url, {"call.completed", "call.failed"}, "5", True)
        assert await _save(page) == 200
        assert page.url == f"{platform.base}/dashboard/subscriptions/{sub['id']}"
        assert await page.locator(".notice").inner_text() == "Saved."
        assert "call.completed, call.failed" in await page.locator(".events").inner_text()
        changed = await _sub(platform, key, sub["id"])
        assert (changed["url"], changed["events"]) == (new.url, ["call.completed", "call.failed"])
        assert (changed["rate_limit_per_second"], changed["ordered"]) == (5, True)

        event = await platform.publish(key, 1)
        await new.wait_for(lambda got: event["id"] in verified(got, sub["secret"]))
        assert old.requests == []

        await _fill(page, new.url, {"call.completed"}, "", False)  # empty: no limit
        assert await _save(page) == 200
        cleared = await _sub(platform, key, sub["id"])
        assert (cleared["events"], cleared["rate_limit_per_second"], cleared["ordered"]) == (
            ["call.completed"],
            None,
            False,
        )
        await customer.context.close()


BAD_INPUT = [
    ("ftp://x.example/h", {"call.completed", "call.no_answer"}, "", "must be an absolute http://"),
    ("RECEIVER", set(), "7", "events must be a non-empty list"),
    ("RECEIVER", {"call.completed"}, "0", "rate_limit_per_second must be a whole number from 1 to"),
    ("RECEIVER", {"call.completed"}, "2.5", "rate_limit_per_second must be a whole number from 1 to"),
    ("RECEIVER", {"call.completed"}, "9" * 5000, "rate_limit_per_second must be a whole number from 1 to"),
    ("http://169.254.169.254/latest", {"call.completed"}, "", "url is not allowed"),
    ("http://10.0.0.1/hook", {"call.completed"}, "", "a private or reserved address"),
]


async def test_bad_input_is_refused_with_its_message_and_the_values_given(
    tmp_path: Path, browser: Browser
) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    async with running_receiver() as receiver, running_platform(tmp_path, **GUARDED) as platform:
        sub = await platform.subscribe(key, receiver.url)
        customer = await _opened(browser, platform, key, sub["id"])
        page = customer.page
        for url, events, rate, message in BAD_INPUT:
            url = receiver.url + "/other" if url == "RECEIVER" else url
            await _fill(page, url, events, rate, True)
            assert await _save(page) == 400, message
            assert message in await page.locator(".edit .notice.error").inner_text()
            # What was given is back in the form, to correct.
            assert await page.input_value("input[name=url]") == url
            assert await _checked_events(page) == events
            assert await page.input_value("input[name=rate_limit_per_second]") == rate
            assert await page.locator("input[name=ordered]").is_checked()
        unchanged = await _sub(platform, key, sub["id"])
        assert (unchanged["url"], unchanged["events"], unchanged["ordered"]) == (
            receiver.url,
            ["call.completed"],
            False,
        )
        await customer.context.close()


async def test_an_edit_that_would_duplicate_another_subscription_is_refused(
    tmp_path: Path, browser: Browser
) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    async with running_receiver() as receiver, running_platform(tmp_path) as platform:
        first = await platform.subscribe(key, receiver.url)
        second = await platform.subscribe(key, receiver.url + "/second")
        customer = await _opened(browser, platform, key, second["id"])
        await _fill(customer.page, first["url"], {"call.completed"}, "", False)
        assert await _save(customer.page) == 409
        error = await customer.page.locator(".edit .notice.error").inner_text()
        assert "another subscription already has this url" in error
        assert (await _sub(platform, key, second["id"]))["url"] == receiver.url + "/second"
        await customer.context.close()


# -- a reload does not send a form again -------------------------------------------------------


async def test_a_reload_after_send_test_event_sends_no_second_one(tmp_path: Path, browser: Browser) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    async with running_receiver() as receiver, running_platform(tmp_path) as platform:
        sub = await platform.subscribe(key, receiver.url)
        customer = await _opened(browser, platform, key, sub["id"])
        page = customer.page
        await page.click("button:text-is('Send test event')")
        sub_page = f"{platform.base}/dashboard/subscriptions/{sub['id']}"
        assert page.url == sub_page
        notice = await page.locator(".notice").inner_text()
        assert notice.startswith("Test event evt_") and notice.endswith("is on its way.")
        await receiver.wait_for(lambda got: len(got) == 1)

        response = await page.reload()
        assert response is not None and response.request.method == "GET" and page.url == sub_page
        assert await page.locator(".notice").count() == 0  # shown once
        tests = "SELECT count(*) FROM events WHERE type = 'webhook.test'"
        assert query(platform.db, tests)[0][0] == 1  # the reload made no event to deliver
        assert [r.json()["type"] for r in receiver.requests] == ["webhook.test"]
        await customer.context.close()


async def test_a_rotated_secret_shows_once_and_signs_what_follows(
    tmp_path: Path, browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    async with running_receiver() as receiver, running_platform(tmp_path) as platform:
        sub = await platform.subscribe(key, receiver.url)
        customer = await _opened(browser, platform, key, sub["id"])
        page, sub_path = customer.page, f"/dashboard/subscriptions/{sub['id']}"
        token = await page.locator("input[name=csrf]").first.get_attribute("value") or ""
        sent = await customer.context.request.post(
            f"{platform.base}{sub_path}/rotate-secret", form={"csrf": token}, max_redirects=0
        )
        assert sent.status == 303 and sent.headers["location"] == sub_path
        cookie = sent.headers["set-cookie"]
        assert "HttpOnly" in cookie and f"Path={sub_path};" in cookie + ";" and "Max-Age=60" in cookie

        await page.goto(platform.base + sub_path)
        secret = await page.locator("#new-secret").inner_text()
        assert secret.startswith("whsec_") and secret != sub["secret"]
        assert secret not in cookie and secret not in page.url
        await page.reload()
        assert await page.locator("#new-secret").count() == 0
        assert "webhookd_flash" not in {c["name"] for c in await customer.context.cookies()}

        event = await platform.publish(key, 1)
        await receiver.wait_for(lambda got: event["id"] in verified(got, secret))
        await customer.context.close()
    assert secret not in caplog.text


async def test_after_a_redirect_each_form_notice_shows_on_its_page(tmp_path: Path, browser: Browser) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    async with running_receiver() as receiver, running_platform(tmp_path) as platform:
        sub = await platform.subscribe(key, receiver.url)
        event = await platform.publish(key, 1)
        await receiver.wait_for(lambda got: len(got) == 1)
        customer = await _opened(browser, platform, key, sub["id"])
        page = customer.page
        await page.click("button:text-is('Re-enable')")
        assert "Re-enabled" in await page.locator(".notice").inner_text()
        await page.click("button:text-is('Recover failed')")
        assert "Re-queued 0 failed deliveries" in await page.locator(".notice").inner_text()

        delivery_id = query(platform.db, "SELECT id FROM deliveries WHERE event_id = ?", event["id"])[0][0]
        await page.goto(f"{platform.base}/dashboard/deliveries/{delivery_id}")
        await page.click("button:text-is('Retry')")
        assert page.url == f"{platform.base}/dashboard/deliveries/{delivery_id}"
        assert "Retrying now" in await page.locator(".notice").inner_text()
        await eventually(lambda: len(receiver.requests) == 2)
        await page.reload()
        assert await page.locator(".notice").count() == 0
        await customer.context.close()


async def test_recover_without_a_time_is_refused_with_what_to_do(tmp_path: Path, browser: Browser) -> None:
    key = await provision_key(tmp_path / "w.db", "acme", SCOPES)
    async with running_platform(tmp_path) as platform:
        sub = await platform.subscribe(key, "http://127.0.0.1:9/unreachable")
        customer = await _opened(browser, platform, key, sub["id"])
        token = await customer.page.locator("input[name=csrf]").first.get_attribute("value") or ""
        recover = f"{platform.base}/dashboard/subscriptions/{sub['id']}/recover"

        for since in ("", "yesterday"):
            response = await customer.context.request.post(recover, form={"csrf": token, "since": since})
            assert response.status == 400 and "Pick the time to recover from" in await response.text()
        await customer.context.close()
