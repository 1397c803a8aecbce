"""``POST /api/v1/events/batch`` over real HTTP, on a server on SQLite and one on PostgreSQL: answers in
order, repeats answered with the originals, one bad event refusing the whole batch, the size limits,
and delivery to a real receiver verified with the standardwebhooks package."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.harness import (
    POSTGRES_DSN,
    Receiver,
    auth,
    create_key,
    opened_store,
    postgres_database_url,
    running_receiver,
    running_server,
    server_settings,
)
from webhookd.inputs import MAX_BATCH_EVENTS
from webhookd.models import Scope

pytestmark = pytest.mark.anyio

BATCH = "/api/v1/events/batch"
BODY_LIMIT = 65536
ACME = "acme"


@dataclass
class World:
    base: str
    http: aiohttp.ClientSession
    key: str
    publisher: str
    """A key of ``acme`` with the publish scope alone."""
    receiver: Receiver

    async def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        headers = auth(key or self.key)
        async with self.http.request(method, self.base + path, data=data, headers=headers) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else None

    async def subscribe(self, events: list[str]) -> dict[str, Any]:
        status, body = await self.call(
            "POST", "/api/v1/webhook-subscriptions", {"url": self.receiver.url, "events": events}
        )
        assert status == 201, body
        subscription: dict[str, Any] = body
        return subscription

    async def event_ids(self) -> list[str]:
        status, body = await self.call("GET", "/api/v1/events?limit=100")
        assert status == 200, body
        return [event["id"] for event in body["data"]]

    async def delivery_count(self, subscription_id: str) -> int:
        path = f"/api/v1/webhook-subscriptions/{subscription_id}/deliveries?limit=100"
        status, body = await self.call("GET", path)
        assert status == 200, body
        return len(body["data"])


@pytest.fixture(params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    db = tmp_path / "w.db"
    url = f"sqlite:///{db}"
    if request.param == "postgres":
        url = await postgres_database_url(POSTGRES_DSN, request.getfixturevalue("schema"))
    settings = server_settings(
        db,
        WEBHOOKD_DATABASE_URL=url,
        WEBHOOKD_MAX_BODY_BYTES=str(BODY_LIMIT),
        WEBHOOKD_RATE_LIMIT_PER_MIN="1000000",
    )
    async with opened_store(settings) as store:
        key = await create_key(store, ACME, set(Scope))
        publisher = await create_key(store, ACME, {Scope.PUBLISH_EVENTS})
    async with (
        running_receiver() as receiver,
        running_server(settings) as base,
        aiohttp.ClientSession() as http,
    ):
        yield World(base, http, key, publisher, receiver)


def event(n: int, **fields: Any) -> dict[str, Any]:
    return {"type": "call.completed", "data": {"n": n}, **fields}


async def test_a_batch_answers_each_event_in_order_and_delivers_each_signed(world: World) -> None:
    secret = (await world.subscribe(["call.completed", "call.ringing"]))["secret"]
    sent = [event(0), {"type": "call.ringing", "data": {"n": 1}}, event(2, ordering_key="call-7"), event(3)]

    status, body = await world.call("POST", BATCH, {"events": sent}, key=world.publisher)

    assert status == 202, body
    assert [item["status"] for item in body["data"]] == [202] * 4
    published = [item["event"] for item in body["data"]]
    assert [(e["type"], e["data"], e["customer_id"]) for e in published] == [
        (s["type"], s["data"], ACME) for s in sent
    ]
    assert published[2]["ordering_key"] == "call-7"
    assert sorted(await world.event_ids()) == sorted(e["id"] for e in published)
    await world.receiver.wait_for(lambda got: len(got) == 4)
    verified = {}
    for received in world.receiver.requests:
        payload = Webhook(secret).verify(received.body, received.headers)
        verified[payload["id"]] = payload
    assert verified == {
        e["id"]: {k: e[k] for k in ("id", "type", "timestamp", "customer_id", "data")} for e in published
    }


async def test_a_repeated_batch_answers_200_with_the_originals_and_stores_nothing(world: World) -> None:
    subscription = await world.subscribe(["call.completed"])
    sent = [event(0, idempotency_key="k0"), event(1, idempotency_key="k1"), event(2, idempotency_key="k0")]

    status, first = await world.call("POST", BATCH, {"events": sent})
    assert status == 202, first
    assert [item["status"] for item in first["data"]] == [202, 202, 200]
    ids = [item["event"]["id"] for item in first["data"]]
    assert ids[2] == ids[0]  # a key repeated within the batch is its first event
    assert first["data"][2]["event"]["data"] == {"n": 0}

    status, again = await world.call("POST", BATCH, {"events": sent})

    assert status == 200, again
    assert [item["status"] for item in again["data"]] == [200, 200, 200]
    assert [item["event"]["id"] for item in again["data"]] == ids
    assert sorted(await world.event_ids()) == sorted(set(ids))
    assert await world.delivery_count(subscription["id"]) == 2


async def test_a_batch_mixing_repeats_and_new_events_answers_202(world: World) -> None:
    status, body = await world.call("POST", "/api/v1/events", event(0, idempotency_key="k0"))
    assert status == 202, body

    status, batch = await world.call("POST", BATCH, {"events": [event(1), event(0, idempotency_key="k0")]})

    assert status == 202, batch
    assert [item["status"] for item in batch["data"]] == [202, 200]
    assert batch["data"][1]["event"]["id"] == body["id"]


BAD_EVENTS = {
    "type": ({"type": "Not A Type"}, 400, "events[2]: type must be"),
    "data": ({"type": "call.completed", "data": [1]}, 400, "events[2]: data must be a JSON object"),
    "field": ({"type": "call.completed", "colour": "red"}, 400, "events[2]: unknown fields ['colour']"),
    "object": ("call.completed", 400, "events[2]: the event must be a JSON object"),
    "key": ({"type": "call.completed", "idempotency_key": ""}, 400, "events[2]: idempotency_key must be"),
    "url": ({"type": "call.completed", "callback_url": "ftp://x"}, 400, "events[2]: callback_url"),
    "tenant": (
        {"type": "call.completed", "customer_id": "someone-else"},
        403,
        "events[2]: only an admin key may publish for another customer",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
async def test_one_bad_event_refuses_the_whole_batch_naming_it(world: World, case: str) -> None:
    await world.subscribe(["call.completed"])
    bad, expected_status, message = BAD_EVENTS[case]
    sent = [event(0, idempotency_key="k0"), event(1, callback_url=world.receiver.url), bad, event(3)]

    status, body = await world.call("POST", BATCH, {"events": sent}, key=world.publisher)

    assert status == expected_status, body
    assert body["error"]["message"].startswith(message), body
    assert await world.event_ids() == []
    # Nothing of the batch was kept: its first key is still free.
    status, retried = await world.call("POST", BATCH, {"events": [event(0, idempotency_key="k0")]})
    assert (status, retried["data"][0]["status"]) == (202, 202)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "events must be a list of 1 to 500 events"),
        ({"events": {"type": "call.completed"}}, "events must be a list of 1 to 500 events"),
        ({"events": []}, "events must be a list of 1 to 500 events"),
        ({"events": [event(0)], "extra": 1}, "unknown fields ['extra']"),
        ({"events": [event(n) for n in range(MAX_BATCH_EVENTS + 1)]}, "events holds 501 events"),
    ],
)
async def test_a_batch_of_the_wrong_shape_or_size_is_refused(
    world: World, body: dict[str, Any], message: str
) -> None:
    status, refused = await world.call("POST", BATCH, body)

    assert status == 400, refused
    assert refused["error"]["message"].startswith(message), refused
    assert await world.event_ids() == []


async def test_the_501st_event_is_refused_with_the_limit_and_what_to_do(world: World) -> None:
    status, body = await world.call("POST", BATCH, {"events": [event(n) for n in range(501)]})

    assert (status, body["error"]["code"]) == (400, "too_many_events")
    assert "at most 500" in body["error"]["message"]
    assert "split it into several batches" in body["error"]["message"]


async def test_a_batch_of_the_most_events_is_stored_whole(world: World) -> None:
    subscription = await world.subscribe(["call.completed"])

    status, body = await world.call("POST", BATCH, {"events": [event(n) for n in range(MAX_BATCH_EVENTS)]})

    assert status == 202, body
    assert [item["event"]["data"]["n"] for item in body["data"]] == list(range(MAX_BATCH_EVENTS))
    assert await world.delivery_count(subscription["id"]) == 100  # one page: there are more
    status, page = await world.call("GET", "/api/v1/events?limit=100&page=4")
    assert status == 200 and len(page["data"]) == 100
    status, past = await world.call("GET", "/api/v1/events?limit=100&page=5")
    assert status == 200 and past["data"] == []


async def test_a_batch_over_the_body_limit_is_refused_with_413(world: World) -> None:
    padding = "x" * 1000
    sent = [event(n, data={"pad": padding}) for n in range(BODY_LIMIT // 1000 + 1)]

    status, body = await world.call("POST", BATCH, {"events": sent})

    assert status == 413, body
    assert await world.event_ids() == []
