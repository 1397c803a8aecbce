"""The subscription API over HTTP: idempotent create, Make.com probe, auth, tenancy, validation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.harness import auth, count_rows, provision_key, running_server, server_settings
from webhookd.models import Scope

pytestmark = pytest.mark.anyio

HOOK = "https://receiver.example.test/webhooks/voka"


@dataclass
class Api:
    http: aiohttp.ClientSession
    base: str
    db: Path
    acme: str
    globex: str

    async def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        headers = auth(key) if key else {}
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    db = tmp_path / "w.db"
    acme = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS})
    globex = await provision_key(db, "globex", {Scope.MANAGE_WEBHOOKS})
    async with running_server(server_settings(db)) as base, aiohttp.ClientSession() as http:
        yield Api(http, base, db, acme, globex)


async def test_create_returns_secret_once_then_existing_without_secret(api: Api) -> None:
    status, first = await api.call(
        "POST",
        "/api/v1/webhook-subscriptions",
        api.acme,
        json={
            "url": HOOK,
            "events": ["call.completed", "call.transcript.ready"],
            "description": "Production receiver",
        },
    )
    assert status == 201
    assert first["secret"].startswith("whsec_")
    assert first["is_active"] is True
    status, again = await api.call(
        "POST",
        "/api/v1/webhook-subscriptions",
        api.acme,
        json={"url": HOOK, "events": ["call.transcript.ready", "call.completed"]},
    )
    assert status == 200
    assert again["id"] == first["id"]
    assert "secret" not in again
    assert count_rows(api.db, "subscriptions") == 1


async def test_different_events_make_a_new_subscription(api: Api) -> None:
    _, first = await api.call(
        "POST", "/api/v1/webhook-subscriptions", api.acme, json={"url": HOOK, "events": ["call.completed"]}
    )
    status, second = await api.call(
        "POST",
        "/api/v1/webhook-subscriptions",
        api.acme,
        json={"url": HOOK, "events": ["call.completed", "call.failed"]},
    )
    assert status == 201
    assert second["id"] != first["id"]


async def test_challenge_probe_echoes_without_auth_or_write(api: Api) -> None:
    before = count_rows(api.db, "subscriptions")
    status, body = await api.call("POST", "/api/v1/webhook-subscriptions?challenge=tok_123")
    assert (status, body) == (202, {"challenge": "tok_123"})
    assert count_rows(api.db, "subscriptions") == before


async def test_an_empty_challenge_is_a_400(api: Api) -> None:
    status, body = await api.call("POST", "/api/v1/webhook-subscriptions?challenge=")
    assert status == 400
    assert body["error"] == {
        "code": "invalid_parameter",
        "message": "challenge is empty: give it a value or leave it out",
    }


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/api/v1/webhook-subscriptions"),
        ("GET", "/api/v1/webhook-subscriptions"),
        ("GET", "/api/v1/webhook-subscriptions/sub_x"),
        ("DELETE", "/api/v1/webhook-subscriptions/sub_x"),
        ("POST", "/api/v1/events"),
    ],
)
async def test_missing_or_bad_key_is_401(api: Api, method: str, path: str) -> None:
    status, body = await api.call(method, path, json={})
    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    status, _ = await api.call(method, path, "whd_not-a-real-key", json={})
    assert status == 401


async def test_missing_scope_is_403(api: Api) -> None:
    publisher = await provision_key(api.db, "acme", {Scope.PUBLISH_EVENTS})
    status, body = await api.call("GET", "/api/v1/webhook-subscriptions", publisher)
    assert status == 403
    assert "manage_webhooks" in body["error"]["message"]


async def test_another_customers_subscription_is_404(api: Api) -> None:
    _, sub = await api.call(
        "POST", "/api/v1/webhook-subscriptions", api.acme, json={"url": HOOK, "events": ["call.completed"]}
    )
    path = f"/api/v1/webhook-subscriptions/{sub['id']}"
    assert (await api.call("GET", path, api.globex))[0] == 404
    assert (await api.call("DELETE", path, api.globex))[0] == 404
    status, listing = await api.call("GET", "/api/v1/webhook-subscriptions", api.globex)
    assert (status, listing) == (200, {"data": [], "next_cursor": None})
    status, mine = await api.call("GET", path, api.acme)
    assert status == 200
    assert mine["id"] == sub["id"]


async def test_delete_then_get_is_404(api: Api) -> None:
    _, sub = await api.call(
        "POST", "/api/v1/webhook-subscriptions", api.acme, json={"url": HOOK, "events": ["call.completed"]}
    )
    path = f"/api/v1/webhook-subscriptions/{sub['id']}"
    assert (await api.call("DELETE", path, api.acme))[0] == 204
    assert (await api.call("GET", path, api.acme))[0] == 404
    assert (await api.call("DELETE", path, api.acme))[0] == 404


async def test_list_pages_with_cursor(api: Api) -> None:
    created = []
    for n in range(5):
        _, sub = await api.call(
            "POST",
            "/api/v1/webhook-subscriptions",
            api.acme,
            json={"url": f"{HOOK}/{n}", "events": ["call.completed"]},
        )
        created.append(sub["id"])
    seen, cursor = [], ""
    while True:
        status, page = await api.call("GET", f"/api/v1/webhook-subscriptions?limit=2{cursor}", api.acme)
        assert status == 200
        seen += [s["id"] for s in page["data"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == sorted(created)


@pytest.mark.parametrize(
    "body,code",
    [
        ({"events": ["call.completed"]}, "invalid_url"),
        ({"url": "ftp://x.example/h", "events": ["call.completed"]}, "invalid_url"),
        ({"url": "not a url", "events": ["call.completed"]}, "invalid_url"),
        ({"url": HOOK, "events": []}, "invalid_events"),
        ({"url": HOOK, "events": ["call.exploded"]}, "invalid_events"),
        ({"url": HOOK, "events": "call.completed"}, "invalid_events"),
        ({"url": HOOK, "events": ["call.completed"], "description": 7}, "invalid_description"),
        *(
            ({"url": HOOK, "events": ["call.completed"], "rate_limit_per_second": bad}, "invalid_rate_limit")
            for bad in (0, -1, 10_001, 2.5, "5", True)
        ),
        *(
            ({"url": HOOK, "events": ["call.completed"], "ordered": bad}, "invalid_ordered")
            for bad in (None, 1, "true")
        ),
    ],
)
async def test_bad_input_is_400_with_a_message(api: Api, body: dict[str, Any], code: str) -> None:
    status, answer = await api.call("POST", "/api/v1/webhook-subscriptions", api.acme, json=body)
    assert status == 400
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]


async def test_a_whole_rate_limit_written_as_a_float_is_the_integer_it_is(api: Api) -> None:
    """JSON Schema counts 5.0 as an integer, so the OpenAPI document allows it: it must be accepted."""
    body = {"url": HOOK, "events": ["call.completed"], "rate_limit_per_second": 5.0}
    status, created = await api.call("POST", "/api/v1/webhook-subscriptions", api.acme, json=body)
    path = f"/api/v1/webhook-subscriptions/{created['id']}"
    patched_status, patched = await api.call("PATCH", path, api.acme, json={"rate_limit_per_second": 2145.0})

    assert (status, created["rate_limit_per_second"]) == (201, 5)
    assert (patched_status, patched["rate_limit_per_second"]) == (200, 2145)


async def test_broken_json_and_bad_limit_are_400(api: Api) -> None:
    status, answer = await api.call("POST", "/api/v1/webhook-subscriptions", api.acme, data=b"{nope")
    assert (status, answer["error"]["code"]) == (400, "invalid_json")
    status, answer = await api.call("GET", "/api/v1/webhook-subscriptions?limit=0", api.acme)
    assert (status, answer["error"]["code"]) == (400, "invalid_parameter")
    status, answer = await api.call("GET", "/api/v1/webhook-subscriptions?cursor=%%%", api.acme)
    assert (status, answer["error"]["code"]) == (400, "invalid_cursor")


async def test_rate_limit_and_ordering_are_set_shown_and_cleared(api: Api) -> None:
    body = {"url": HOOK, "events": ["call.completed"], "rate_limit_per_second": 5, "ordered": True}
    status, created = await api.call("POST", "/api/v1/webhook-subscriptions", api.acme, json=body)
    assert status == 201
    assert (created["rate_limit_per_second"], created["ordered"]) == (5, True)
    path = f"/api/v1/webhook-subscriptions/{created['id']}"

    status, patched = await api.call("PATCH", path, api.acme, json={"rate_limit_per_second": None})
    assert status == 200
    assert (patched["rate_limit_per_second"], patched["ordered"]) == (None, True)
    status, patched = await api.call(
        "PATCH", path, api.acme, json={"ordered": False, "rate_limit_per_second": 50}
    )
    assert (patched["rate_limit_per_second"], patched["ordered"]) == (50, False)
    status, fetched = await api.call("GET", path, api.acme)
    assert (fetched["rate_limit_per_second"], fetched["ordered"]) == (50, False)

    status, refused = await api.call("PATCH", path, api.acme, json={"rate_limit_per_second": 0})
    assert (status, refused["error"]["code"]) == (400, "invalid_rate_limit")
    assert "null for no limit" in refused["error"]["message"]
