"""Delivery outcomes against a misbehaving endpoint, probing, auto-disable and resume."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.chaos import running_chaos
from tests.integration.harness import (
    Received,
    auth,
    eventually,
    provision_key,
    query,
    running_receiver,
    running_server,
    server_settings,
)
from webhookd.models import Scope

pytestmark = pytest.mark.anyio

CHAOS_PATHS = [
    "500",
    "503-retry-after-seconds",
    "429-retry-after-date",
    "410",
    "301",
    "timeout",
    "reset",
    "slow-body",
]


async def _post(http: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, headers=auth(key), json=body) as response:
        assert response.status in (200, 201, 202), await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def _subscribe(http: aiohttp.ClientSession, base: str, key: str, url: str) -> str:
    sub = await _post(
        http, f"{base}/api/v1/webhook-subscriptions", key, {"url": url, "events": ["call.completed"]}
    )
    sub_id: str = sub["id"]
    return sub_id


def _deliveries(db: Path, sub_id: str) -> list[tuple[Any, ...]]:
    return query(db, "SELECT id, status, attempts FROM deliveries WHERE subscription_id = ?", sub_id)


def _attempts(db: Path, sub_id: str) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT a.status_code, a.error, length(a.response_excerpt), a.duration_s, a.succeeded"
        " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
        " WHERE d.subscription_id = ? ORDER BY a.id",
        sub_id,
    )


def _attempt_starts(db: Path, sub_id: str) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT a.started_at FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
        " WHERE d.subscription_id = ? ORDER BY a.attempt_no",
        sub_id,
    )


def _subscription(db: Path, sub_id: str) -> tuple[Any, ...]:
    (row,) = query(
        db,
        "SELECT is_active, disabled_reason, disabled_at, failure_count FROM subscriptions WHERE id = ?",
        sub_id,
    )
    return row


def _settled(db: Path, subs: dict[str, str]) -> bool:
    states = [status for sub_id in subs.values() for _, status, _ in _deliveries(db, sub_id)]
    return len(states) == len(subs) and all(s in {"failed", "parked", "delivered"} for s in states)


async def test_chaos_endpoint_outcomes(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    settings = server_settings(db, WEBHOOKD_RETRY_SCHEDULE="0,0.2,1.5", WEBHOOKD_DELIVERY_TIMEOUT_S="0.5")
    async with running_chaos() as chaos, running_server(settings) as base, aiohttp.ClientSession() as http:
        subs = {path: await _subscribe(http, base, key, chaos.url(path)) for path in CHAOS_PATHS}
        await _post(http, f"{base}/api/v1/events", key, {"type": "call.completed", "data": {}})
        await eventually(lambda: _settled(db, subs), timeout_s=30)

    def gaps(path: str) -> list[float]:
        """Between the starts of successive attempts, as the server recorded them. An attempt is
        claimed only once due, and it is due ``delay`` after the failure that scheduled it, so a
        gap is never shorter than the delay the server chose, however slow this host is."""
        starts = [row[0] for row in _attempt_starts(db, subs[path])]
        return [later - earlier for earlier, later in itertools.pairwise(starts)]

    # 5xx: every attempt spent, then failed; each attempt keeps a 4 KiB excerpt.
    assert [row[1:] for row in _deliveries(db, subs["500"])] == [("failed", 3)]
    assert [(a[0], a[2]) for a in _attempts(db, subs["500"])] == [(500, 4096)] * 3
    # Retry-After in seconds is honoured over the schedule's 0.2 s step.
    assert [row[1:] for row in _deliveries(db, subs["503-retry-after-seconds"])] == [("failed", 3)]
    assert all(gap >= 1.0 for gap in gaps("503-retry-after-seconds"))
    # As an HTTP-date an hour ahead it is capped at the schedule's longest step, 1.5 s: uncapped, the
    # delivery would still be waiting and the test would not have got past _settled.
    assert [row[1:] for row in _deliveries(db, subs["429-retry-after-date"])] == [("failed", 3)]
    assert all(gap >= 1.5 for gap in gaps("429-retry-after-date"))
    # 410 disables the subscription at once and parks the delivery.
    assert len(chaos.times("410")) == 1
    active, reason, disabled_at, _ = _subscription(db, subs["410"])
    assert (active, reason) == (0, "endpoint_gone") and disabled_at is not None
    assert [row[1] for row in _deliveries(db, subs["410"])] == ["parked"]
    # A redirect is a failure, and it is not followed.
    assert {a[0] for a in _attempts(db, subs["301"])} == {301}
    assert chaos.times("redirect-target") == []
    # Time-outs, resets and slow bodies end without a status; the error says what happened.
    # Both endpoints would answer 200 in full after 2 s: an attempt without a status was cut short.
    for path in ("timeout", "slow-body"):
        assert all(a[0] is None and "timed out" in a[1] for a in _attempts(db, subs[path]))
    assert all(a[0] is None and a[1] for a in _attempts(db, subs["reset"]))


async def test_blip_does_not_disable_and_everything_arrives(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    outage_ends = time.monotonic() + 3600

    def status(_: Received) -> int:
        return 503 if time.monotonic() < outage_ends else 200

    settings = server_settings(
        db, WEBHOOKD_RETRY_SCHEDULE="0,0.3,0.3,0.3,0.3,0.3,0.3,0.3", WEBHOOKD_DISABLE_AFTER_FAILURES="10"
    )
    async with (
        running_receiver() as receiver,
        running_server(settings) as base,
        aiohttp.ClientSession() as http,
    ):
        receiver.status_for = status
        receiver.delay_s = 0.2  # slow enough that all 40 are in flight together during the outage
        sub_id = await _subscribe(http, base, key, receiver.url)
        outage_ends = time.monotonic() + 1.0
        published = await asyncio.gather(
            *[
                _post(http, f"{base}/api/v1/events", key, {"type": "call.completed", "data": {"n": n}})
                for n in range(40)
            ]
        )
        wanted = {event["id"] for event in published}
        await receiver.wait_for(
            lambda got: wanted <= {r.headers["webhook-id"] for r in got if r.status == 200},
            timeout_s=30,
        )

    failed_during_outage = sum(1 for a in _attempts(db, sub_id) if a[0] == 503)
    assert failed_during_outage >= 10  # more failures than the disable threshold ...
    active, reason, _, failure_count = _subscription(db, sub_id)
    assert (active, reason, failure_count) == (1, None, 0)  # ... yet the subscription stays active
    assert {row[1] for row in _deliveries(db, sub_id)} == {"delivered"}


async def test_ten_straight_failures_disable_and_enable_resumes(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    up = False
    settings = server_settings(db, WEBHOOKD_RETRY_SCHEDULE=",".join(["0"] + ["0.05"] * 19))
    async with (
        running_receiver() as receiver,
        running_server(settings) as base,
        aiohttp.ClientSession() as http,
    ):
        receiver.status_for = lambda _: 200 if up else 500
        sub_id = await _subscribe(http, base, key, receiver.url)
        events = [
            await _post(http, f"{base}/api/v1/events", key, {"type": "call.completed", "data": {}})
            for _ in range(3)
        ]
        await eventually(lambda: _subscription(db, sub_id)[0] == 0, timeout_s=20)
        async with http.get(f"{base}/api/v1/webhook-subscriptions/{sub_id}", headers=auth(key)) as response:
            sub = await response.json()
        assert (sub["is_active"], sub["disabled_reason"]) == (False, "consecutive_failures")
        assert sub["disabled_at"] is not None and sub["failure_count"] == 10
        assert {row[1] for row in _deliveries(db, sub_id)} == {"parked"}
        attempts_when_disabled = len(receiver.requests)

        await asyncio.sleep(0.5)  # a disabled subscription gets no attempts
        assert len(receiver.requests) == attempts_when_disabled

        up = True
        enabled = await _post(http, f"{base}/api/v1/webhook-subscriptions/{sub_id}/enable", key, {})
        assert (enabled["is_active"], enabled["failure_count"], enabled["disabled_reason"]) == (True, 0, None)
        wanted = {event["id"] for event in events}
        await receiver.wait_for(
            lambda got: wanted <= {r.headers["webhook-id"] for r in got[attempts_when_disabled:]}
        )
    assert {row[1] for row in _deliveries(db, sub_id)} == {"delivered"}


async def test_enable_another_customers_subscription_is_404(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    acme = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS})
    globex = await provision_key(db, "globex", {Scope.MANAGE_WEBHOOKS})
    async with running_server(server_settings(db)) as base, aiohttp.ClientSession() as http:
        sub_id = await _subscribe(http, base, acme, "https://hooks.example.test/a")
        async with http.post(
            f"{base}/api/v1/webhook-subscriptions/{sub_id}/enable", headers=auth(globex)
        ) as response:
            assert response.status == 404
