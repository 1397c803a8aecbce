"""Publish through the API, receive at a real endpoint, verify with the standardwebhooks package."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.harness import (
    auth,
    eventually,
    provision_key,
    query,
    running_receiver,
    running_server,
    server_settings,
)
from webhookd.models import DeliveryStatus, Scope

pytestmark = pytest.mark.anyio


async def _subscribe(http: aiohttp.ClientSession, base: str, key: str, url: str, events: list[str]) -> str:
    async with http.post(
        f"{base}/api/v1/webhook-subscriptions", headers=auth(key), json={"url": url, "events": events}
    ) as response:
        assert response.status == 201
        secret: str = (await response.json())["secret"]
        return secret


async def _publish(
    http: aiohttp.ClientSession, base: str, key: str, body: dict[str, object]
) -> dict[str, object]:
    async with http.post(f"{base}/api/v1/events", headers=auth(key), json=body) as response:
        assert response.status == 202, await response.text()
        result: dict[str, object] = await response.json()
        return result


def deliveries(db: Path) -> list[tuple[str, str, str, int]]:
    """Every delivery row on disk: (event id, customer, status, attempts), oldest first."""
    rows = query(db, "SELECT event_id, customer_id, status, attempts FROM deliveries ORDER BY seq")
    return [(row[0], row[1], row[2], row[3]) for row in rows]


FINAL = {DeliveryStatus.DELIVERED, DeliveryStatus.FAILED, DeliveryStatus.CANCELED}


def finished(db: Path, event_id: object) -> bool:
    """Whether ``event_id`` has deliveries and each of them is over: no attempt is left to make."""
    statuses = [status for event, _, status, _ in deliveries(db) if event == event_id]
    return bool(statuses) and set(statuses) <= FINAL


async def test_published_event_is_delivered_signed(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    settings = server_settings(db)
    async with (
        running_receiver() as receiver,
        running_server(settings) as base,
        aiohttp.ClientSession() as http,
    ):
        secret = await _subscribe(http, base, key, receiver.url, ["call.completed"])
        event = await _publish(
            http, base, key, {"type": "call.completed", "data": {"call_id": "c1", "duration_seconds": 47}}
        )
        await receiver.wait_for(lambda got: len(got) == 1)

    received = receiver.requests[0]
    payload = Webhook(secret).verify(received.body, received.headers)
    assert payload == {
        "id": event["id"],
        "type": "call.completed",
        "timestamp": event["timestamp"],
        "customer_id": "acme",
        "data": {"call_id": "c1", "duration_seconds": 47},
    }
    assert received.headers["webhook-id"] == event["id"]
    assert received.headers["Content-Type"] == "application/json"


async def test_unsubscribed_event_type_is_not_delivered(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    async with (
        running_receiver() as receiver,
        running_server(server_settings(db)) as base,
        aiohttp.ClientSession() as http,
    ):
        await _subscribe(http, base, key, receiver.url, ["call.completed"])
        ignored = await _publish(http, base, key, {"type": "call.ringing", "data": {}})
        wanted = await _publish(http, base, key, {"type": "call.completed", "data": {}})
        await eventually(lambda: finished(db, wanted["id"]))

    # A publish makes its deliveries in its own transaction: no row for the ignored event now, none ever.
    assert deliveries(db) == [(wanted["id"], "acme", "delivered", 1)]
    assert ignored["id"] not in {event for event, *_ in deliveries(db)}
    assert [r.headers["webhook-id"] for r in receiver.requests] == [wanted["id"]]


async def test_another_customers_events_are_not_delivered(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    acme = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    globex = await provision_key(db, "globex", {Scope.PUBLISH_EVENTS})
    async with (
        running_receiver() as receiver,
        running_server(server_settings(db)) as base,
        aiohttp.ClientSession() as http,
    ):
        await _subscribe(http, base, acme, receiver.url, ["call.completed"])
        theirs = await _publish(http, base, globex, {"type": "call.completed", "data": {}})
        mine = await _publish(http, base, acme, {"type": "call.completed", "data": {}})
        await eventually(lambda: finished(db, mine["id"]))

    assert deliveries(db) == [(mine["id"], "acme", "delivered", 1)]
    assert theirs["id"] not in {event for event, *_ in deliveries(db)}
    assert [r.headers["webhook-id"] for r in receiver.requests] == [mine["id"]]


async def test_failed_attempt_is_retried_on_schedule(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    statuses = iter([500, 503, 200])
    settings = server_settings(db, WEBHOOKD_RETRY_SCHEDULE="0,0.1,0.1,0.1")
    async with (
        running_receiver() as receiver,
        running_server(settings) as base,
        aiohttp.ClientSession() as http,
    ):
        receiver.status_for = lambda _: next(statuses)
        secret = await _subscribe(http, base, key, receiver.url, ["call.completed"])
        event = await _publish(http, base, key, {"type": "call.completed", "data": {}})
        await eventually(lambda: finished(db, event["id"]))

    assert deliveries(db) == [(event["id"], "acme", "delivered", 3)]
    attempts = query(db, "SELECT attempt_no, status_code, succeeded FROM attempts ORDER BY attempt_no")
    assert attempts == [(1, 500, 0), (2, 503, 0), (3, 200, 1)]
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event["id"]] * 3
    for received in receiver.requests:
        Webhook(secret).verify(received.body, received.headers)


async def test_publish_repeat_idempotency_key_stores_once(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.PUBLISH_EVENTS})
    async with running_server(server_settings(db)) as base, aiohttp.ClientSession() as http:
        body = {"type": "call.completed", "data": {"n": 1}, "idempotency_key": "call-1-done"}
        first = await _publish(http, base, key, body)
        async with http.post(f"{base}/api/v1/events", headers=auth(key), json=body) as again:
            assert again.status == 200
            assert (await again.json())["id"] == first["id"]
