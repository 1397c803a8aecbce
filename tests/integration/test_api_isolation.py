"""Tenant isolation: another customer's resource answers 404, exactly like a missing one, on
every per-resource endpoint, and touches nothing. The other customer's key has every scope but
admin; an admin key reads any customer's event by id, and nothing else of theirs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Receiver, query, running_receiver
from tests.integration.test_management_api import (
    ALL_SCOPES,
    MANY_CALLS,
    SUBS,
    Api,
    assert_error,
    serving,
)
from webhookd.models import Scope

pytestmark = pytest.mark.anyio

MISSING = {
    "sub": "sub_00000000000000000000000000",
    "event": "evt_00000000000000000000000000",
    "delivery": "dlv_00000000000000000000000000",
}
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", f"{SUBS}/{{sub}}", None),
    ("PATCH", f"{SUBS}/{{sub}}", {"description": "taken over", "url": "https://evil.example.test/h"}),
    ("DELETE", f"{SUBS}/{{sub}}", None),
    ("POST", f"{SUBS}/{{sub}}/enable", None),
    ("POST", f"{SUBS}/{{sub}}/rotate-secret", None),
    ("POST", f"{SUBS}/{{sub}}/test", None),
    ("POST", f"{SUBS}/{{sub}}/recover", {"since": "2020-01-01T00:00:00Z"}),
    ("GET", f"{SUBS}/{{sub}}/deliveries", None),
    ("GET", f"{SUBS}/{{sub}}/deliveries?status=delivered", None),
    ("GET", "/api/v1/deliveries/{delivery}", None),
    ("POST", "/api/v1/deliveries/{delivery}/retry", None),
    ("GET", "/api/v1/events/{event}", None),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _ in ENDPOINTS]
EVENT = "/api/v1/events/{event}"


@dataclass
class World:
    """acme owns a subscription, an event and a delivered delivery; globex owns nothing, and has a
    customer key and an admin key."""

    api: Api
    receiver: Receiver
    acme: str
    globex: str
    globex_admin: str
    ids: dict[str, str]

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row that could change, read straight from the database file."""
        return {
            table: query(self.api.db, f"SELECT * FROM {table} ORDER BY id")
            for table in ("subscriptions", "events", "deliveries", "attempts", "customers")
        }


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_receiver() as receiver, serving(tmp_path, **MANY_CALLS) as api:
        acme = await api.key("acme", ALL_SCOPES - {Scope.ADMIN}, "Acme Dental")
        globex = await api.key("globex", ALL_SCOPES - {Scope.ADMIN}, "Globex")
        globex_admin = await api.key("globex", ALL_SCOPES)
        sub = await api.subscribe(acme, receiver.url, ["call.completed"])
        event = await api.publish(acme, "call.completed", call_id="c1")
        delivered = await api.until(
            lambda: api.call("GET", f"{SUBS}/{sub['id']}/deliveries?status=delivered", acme),
            lambda r: len(r.body["data"]) == 1,
        )
        ids = {"sub": sub["id"], "event": event["id"], "delivery": delivered.body["data"][0]["id"]}
        yield World(api, receiver, acme, globex, globex_admin, ids)


@pytest.mark.parametrize("method,path,body", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_another_customers_resource_is_404(
    world: World, method: str, path: str, body: dict[str, Any] | None
) -> None:
    before = world.snapshot()
    reply = await world.api.call(method, path.format(**world.ids), world.globex, json=body)
    assert_error(reply, 404, "not_found")
    missing = await world.api.call(method, path.format(**MISSING), world.globex, json=body)
    assert (missing.status, missing.body) == (reply.status, reply.body), "existence must not leak"
    assert world.snapshot() == before, "another customer's request changed acme's data"
    assert len(world.receiver.requests) == 1


@pytest.mark.parametrize("method,path,body", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_the_owner_reaches_the_same_endpoint(
    world: World, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """The control for the test above: the 404 comes from ownership, not from a wrong path."""
    reply = await world.api.call(method, path.format(**world.ids), world.acme, json=body)
    assert reply.status in {200, 202, 204}, (reply.status, reply.body)


async def test_an_admin_key_reads_another_customers_event_and_nothing_else_of_theirs(world: World) -> None:
    """An admin publishes for any customer, so it may read any event back by id; the rest of a
    customer's resources stay that customer's alone."""
    before = world.snapshot()
    event = EVENT.format(**world.ids)
    as_admin = await world.api.call("GET", event, world.globex_admin)
    as_owner = await world.api.call("GET", event, world.acme)
    assert (as_admin.status, as_admin.body) == (200, as_owner.body)
    assert as_admin.body["customer_id"] == "acme"
    for method, path, body in ENDPOINTS:
        if path != EVENT:
            reply = await world.api.call(method, path.format(**world.ids), world.globex_admin, json=body)
            assert_error(reply, 404, "not_found")
    assert world.snapshot() == before


async def test_an_admin_reads_the_event_it_published_for_a_customer(world: World) -> None:
    body = {"type": "call.completed", "customer_id": "initech", "data": {"call_id": "c9"}}
    published = await world.api.call("POST", "/api/v1/events", world.globex_admin, json=body)
    assert published.status == 202, published.body
    event = f"/api/v1/events/{published.body['id']}"

    reply = await world.api.call("GET", event, world.globex_admin)

    assert (reply.status, reply.body) == (200, published.body)
    assert_error(await world.api.call("GET", event, world.acme), 404, "not_found")


async def test_another_customers_lists_are_empty(world: World) -> None:
    for path in (SUBS, "/api/v1/events", "/api/v1/events?type=call.completed"):
        reply = await world.api.call("GET", path, world.globex)
        assert (reply.status, reply.body) == (200, {"data": [], "next_cursor": None}), path


async def test_a_cursor_from_another_customer_reveals_nothing(world: World) -> None:
    api, acme = world.api, world.acme
    await api.subscribe(acme, f"{world.receiver.url}/2", ["call.failed"])
    await api.publish(acme, "call.failed")
    for path in (SUBS, "/api/v1/events"):
        page = await api.call("GET", f"{path}?limit=1", acme)
        cursor = page.body["next_cursor"]
        assert cursor is not None
        reply = await api.call("GET", f"{path}?limit=1&cursor={cursor}", world.globex)
        assert reply.status in {200, 400}, reply.body
        if reply.status == 200:
            assert reply.body["data"] == [], path


async def test_a_non_admin_key_cannot_publish_for_another_customer(world: World) -> None:
    publisher = await world.api.key("globex", {Scope.PUBLISH_EVENTS})
    before = world.snapshot()
    reply = await world.api.call(
        "POST", "/api/v1/events", publisher, json={"type": "call.completed", "customer_id": "acme"}
    )
    assert_error(reply, 403, "forbidden")
    assert world.snapshot() == before
