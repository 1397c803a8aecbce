"""Secret rotation, per-call callback URLs, recover and rate limits over the real API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.integration.harness import (
    MovableClock,
    Receiver,
    auth,
    eventually,
    provision_key,
    query,
    running_receiver,
    running_server,
    server_settings,
)
from webhookd.models import Scope, utcnow

pytestmark = pytest.mark.anyio

ALL_SCOPES = {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS, Scope.READ_EVENTS}


@dataclass
class Client:
    http: aiohttp.ClientSession
    base: str
    key: str
    db: Path

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
        async with self.http.request(method, self.base + path, headers=auth(self.key), json=body) as response:
            payload = await response.json() if response.content_type == "application/json" else None
            return response.status, payload, dict(response.headers)

    async def subscribe(self, url: str) -> dict[str, Any]:
        status, sub, _ = await self.call(
            "POST", "/api/v1/webhook-subscriptions", {"url": url, "events": ["call.completed"]}
        )
        assert status == 201
        return dict(sub)

    async def publish(self, **fields: Any) -> dict[str, Any]:
        status, event, _ = await self.call(
            "POST", "/api/v1/events", {"type": "call.completed", "data": {}, **fields}
        )
        assert status == 202, event
        return dict(event)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as running:
        yield running


async def _client(
    tmp_path: Path, clock: Callable[[], datetime] = utcnow, **env: str
) -> AsyncIterator[Client]:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", ALL_SCOPES)
    settings = server_settings(db, **env)
    async with running_server(settings, clock=clock) as base, aiohttp.ClientSession() as http:
        yield Client(http, base, key, db)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    async for made in _client(tmp_path, WEBHOOKD_RETRY_SCHEDULE="0"):
        yield made


def verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


async def test_during_rotation_both_secrets_verify(client: Client, receiver: Receiver) -> None:
    sub = await client.subscribe(receiver.url)
    old = sub["secret"]
    status, rotated, _ = await client.call("POST", f"/api/v1/webhook-subscriptions/{sub['id']}/rotate-secret")
    assert status == 200 and rotated["secret"] != old and rotated["previous_secret_expires_at"]
    await client.publish()
    await receiver.wait_for(lambda got: len(got) == 1)

    delivered = receiver.requests[0]
    assert len(delivered.headers["webhook-signature"].split(" ")) == 2  # two v1 entries
    assert verifies(old, delivered.body, delivered.headers)
    assert verifies(rotated["secret"], delivered.body, delivered.headers)
    assert not verifies("whsec_" + "A" * 43 + "=", delivered.body, delivered.headers)


async def test_after_the_grace_period_only_the_new_secret_signs(tmp_path: Path, receiver: Receiver) -> None:
    clock = MovableClock()
    async for client in _client(tmp_path, clock):
        sub = await client.subscribe(receiver.url)
        _, rotated, _ = await client.call("POST", f"/api/v1/webhook-subscriptions/{sub['id']}/rotate-secret")
        clock.move_past(datetime.fromisoformat(rotated["previous_secret_expires_at"]))
        await client.publish()
        await receiver.wait_for(lambda got: len(got) == 1)
    delivered = receiver.requests[0]
    assert len(delivered.headers["webhook-signature"].split(" ")) == 1
    assert verifies(rotated["secret"], delivered.body, delivered.headers)
    assert not verifies(sub["secret"], delivered.body, delivered.headers)


async def test_callback_url_gets_the_event_signed_with_the_callback_secret(
    client: Client, receiver: Receiver
) -> None:
    status, secret, _ = await client.call("GET", "/api/v1/callback-secret")
    assert status == 200 and secret["secret"].startswith("whsec_")
    event = await client.publish(callback_url=receiver.url + "/per-call", data={"call_id": "c1"})
    assert event["callback_url"] == receiver.url + "/per-call"
    await receiver.wait_for(lambda got: len(got) == 1)

    delivered = receiver.requests[0]
    assert delivered.path == "/hook/per-call"
    assert Webhook(secret["secret"]).verify(delivered.body, delivered.headers)["id"] == event["id"]
    _, listing, _ = await client.call("GET", "/api/v1/webhook-subscriptions")
    assert listing["data"] == []  # the callback target is not a customer subscription


async def test_rotated_callback_secret_signs_alongside_the_old_one(
    client: Client, receiver: Receiver
) -> None:
    _, old, _ = await client.call("GET", "/api/v1/callback-secret")
    status, new, _ = await client.call("POST", "/api/v1/callback-secret")
    assert status == 200 and new["secret"] != old["secret"] and new["previous_secret_expires_at"]
    assert (await client.call("GET", "/api/v1/callback-secret"))[1]["secret"] == new["secret"]
    await client.publish(callback_url=receiver.url)
    await receiver.wait_for(lambda got: len(got) == 1)
    delivered = receiver.requests[0]
    assert verifies(old["secret"], delivered.body, delivered.headers)
    assert verifies(new["secret"], delivered.body, delivered.headers)


async def test_after_the_grace_period_the_callback_secret_signs_alone(
    tmp_path: Path, receiver: Receiver
) -> None:
    clock = MovableClock()
    async for client in _client(tmp_path, clock):
        _, old, _ = await client.call("GET", "/api/v1/callback-secret")
        _, new, _ = await client.call("POST", "/api/v1/callback-secret")
        clock.move_past(datetime.fromisoformat(new["previous_secret_expires_at"]))
        _, shown, _ = await client.call("GET", "/api/v1/callback-secret")
        await client.publish(callback_url=receiver.url)
        await receiver.wait_for(lambda got: len(got) == 1)
    assert shown == {"secret": new["secret"], "previous_secret_expires_at": None}
    delivered = receiver.requests[0]
    assert len(delivered.headers["webhook-signature"].split(" ")) == 1
    assert verifies(new["secret"], delivered.body, delivered.headers)
    assert not verifies(old["secret"], delivered.body, delivered.headers)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/cb",
        "http://[::127.0.0.1]:9/cb",
        "http://[::169.254.169.254]/cb",
        "http://[::ffff:0:127.0.0.1]:9/cb",
        "http://[64:ff9b:1::7f00:1]:9/cb",
    ],
)
async def test_callback_url_to_a_private_address_is_refused(tmp_path: Path, url: str) -> None:
    async for client in _client(tmp_path, WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS="false"):
        status, body, _ = await client.call(
            "POST", "/api/v1/events", {"type": "call.completed", "data": {}, "callback_url": url}
        )
        assert (status, body["error"]["code"]) == (400, "destination_blocked")
        assert query(client.db, "SELECT count(*) FROM events") == [(0,)]


def _failed(db: Path) -> set[str]:
    return {row[0] for row in query(db, "SELECT event_id FROM deliveries WHERE status = 'failed'")}


async def test_recover_requeues_exactly_the_failed_deliveries_in_the_window(
    client: Client, receiver: Receiver
) -> None:
    receiver.status_for = lambda got: 200 if got.json()["data"].get("ok") else 500
    sub = await client.subscribe(receiver.url)
    before = await client.publish(data={"n": 1})
    await eventually(lambda: before["id"] in _failed(client.db))
    since = datetime.now(UTC)
    inside = [await client.publish(data={"n": n}) for n in (2, 3)]
    fine = await client.publish(data={"n": 4, "ok": True})
    await eventually(lambda: {e["id"] for e in inside} <= _failed(client.db))
    until = datetime.now(UTC)
    after = await client.publish(data={"n": 5})
    await eventually(lambda: after["id"] in _failed(client.db))
    await receiver.wait_for(lambda got: fine["id"] in {r.headers["webhook-id"] for r in got})

    receiver.status_for = lambda _: 200
    status, answer, _ = await client.call(
        "POST",
        f"/api/v1/webhook-subscriptions/{sub['id']}/recover",
        {"since": since.isoformat(), "until": until.isoformat()},
    )
    assert (status, answer) == (202, {"requeued": 2, "more": False})
    wanted = {e["id"] for e in inside}
    await receiver.wait_for(lambda got: wanted <= {r.headers["webhook-id"] for r in got if r.status == 200})
    assert _failed(client.db) == {before["id"], after["id"]}  # outside the window: untouched


async def test_recover_rejects_a_bad_window(client: Client, receiver: Receiver) -> None:
    sub = await client.subscribe(receiver.url)
    path = f"/api/v1/webhook-subscriptions/{sub['id']}/recover"
    for body in (
        {},
        {"since": "yesterday"},
        {"since": "2026-01-02T00:00:00"},
        {"since": "2026-01-02T00:00:00Z", "until": "yesterday"},
    ):
        status, answer, _ = await client.call("POST", path, body)
        assert status == 400 and answer["error"]["code"] == "invalid_time", body


async def test_recover_over_a_window_that_ends_before_it_starts_requeues_nothing(
    client: Client, receiver: Receiver
) -> None:
    """The document cannot tie ``until`` to ``since``, so an empty window is answered, not refused."""
    sub = await client.subscribe(receiver.url)
    path = f"/api/v1/webhook-subscriptions/{sub['id']}/recover"
    for body in (
        {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"since": "9999-01-01T00:00:00Z"},  # after now, which until defaults to
    ):
        status, answer, _ = await client.call("POST", path, body)
        assert (status, answer) == (202, {"requeued": 0, "more": False}), body


async def test_rate_limit_counts_down_and_429_carries_retry_after(tmp_path: Path) -> None:
    async for client in _client(tmp_path, WEBHOOKD_RATE_LIMIT_PER_MIN="3"):
        remaining = []
        for _ in range(3):
            status, _, headers = await client.call("GET", "/api/v1/webhook-subscriptions")
            assert status == 200 and headers["X-RateLimit-Limit"] == "3"
            remaining.append(int(headers["X-RateLimit-Remaining"]))
        status, body, headers = await client.call("GET", "/api/v1/webhook-subscriptions")
        assert remaining == [2, 1, 0]
        assert status == 429 and body["error"]["code"] == "rate_limited"
        assert int(headers["Retry-After"]) >= 1 and headers["X-RateLimit-Remaining"] == "0"
        assert (await client.call("POST", "/api/v1/events", {"type": "call.completed", "data": {}}))[0] == 202


async def test_rate_limit_headers_are_on_401s_and_on_unlimited_publishing(tmp_path: Path) -> None:
    async for client in _client(tmp_path, WEBHOOKD_RATE_LIMIT_PER_MIN="5"):
        async with client.http.get(client.base + "/api/v1/webhook-subscriptions") as response:
            assert response.status == 401
            assert (response.headers["X-RateLimit-Limit"], response.headers["X-RateLimit-Remaining"]) == (
                "5",
                "5",
            )
        await client.call("GET", "/api/v1/webhook-subscriptions")
        _, _, headers = await client.call("POST", "/api/v1/events", {"type": "call.completed", "data": {}})
        assert headers["X-RateLimit-Remaining"] == "4"  # shown, not spent
