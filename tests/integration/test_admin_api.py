"""The admin API over real HTTP: its operations on SQLite and on PostgreSQL, a customer's key refused
with 403 on each route, and a revoked key refused by every API node of one PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from tests.contract.conftest import PostgresServer, postgres_server  # noqa: F401 (a fixture)
from tests.integration.backends import CUSTOMER, Live, serving_both
from tests.integration.harness import (
    POSTGRES_DSN,
    auth,
    free_port,
    provision_key,
    running_server,
    server_settings,
    subprocess_env,
    webhookd_command,
    webhookd_process,
)
from webhookd.models import Scope, utcnow
from webhookd.web import KEY_CACHE_TTL_S

pytestmark = pytest.mark.anyio

ADMIN_ROUTES = [
    ("GET", "/api/v1/admin/customers", None),
    ("GET", "/api/v1/admin/customers/acme/keys", None),
    ("POST", "/api/v1/admin/keys/key_01ANY/revoke", None),
    ("GET", "/api/v1/admin/subscriptions?customer_id=acme", None),
    ("POST", "/api/v1/admin/subscriptions/sub_01ANY/enable", None),
    ("POST", "/api/v1/admin/subscriptions/sub_01ANY/recover", {"since": "2026-01-01T00:00:00Z"}),
    ("POST", "/api/v1/admin/deliveries/dlv_01ANY/retry", None),
]
NOTIFY_DEADLINE_S = 1.0
"""How long another PostgreSQL node may take to hear a revocation's NOTIFY."""


async def test_a_customers_key_gets_403_on_every_admin_route(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    customer_key = await provision_key(
        db, CUSTOMER, {Scope.MANAGE_WEBHOOKS, Scope.READ_EVENTS, Scope.PUBLISH_EVENTS}
    )
    async with (
        running_server(server_settings(db), run_workers=False) as base,
        aiohttp.ClientSession() as http,
    ):
        for method, path, body in ADMIN_ROUTES:
            async with http.request(method, base + path, json=body, headers=auth(customer_key)) as reply:
                assert (reply.status, (await reply.json())["error"]["code"]) == (403, "forbidden"), path


@pytest.fixture
async def both(tmp_path: Path, postgres_server: PostgresServer) -> AsyncIterator[dict[str, Live]]:  # noqa: F811
    async with serving_both(tmp_path, postgres_server) as servers:
        yield servers


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_admin_operations_act_on_the_customers_resources(both: dict[str, Live], backend: str) -> None:
    live = both[backend]
    sub, dlv = live.seeded["sub"], live.seeded["dlv"]

    customers = await live.call("GET", "/api/v1/admin/customers?limit=1")
    keys = await live.call("GET", f"/api/v1/admin/customers/{CUSTOMER}/keys")
    active = await live.call("GET", f"/api/v1/admin/subscriptions?customer_id={CUSTOMER}&state=active")
    disabled = await live.call("GET", f"/api/v1/admin/subscriptions?customer_id={CUSTOMER}&state=disabled")
    enabled = await live.call("POST", f"/api/v1/admin/subscriptions/{sub}/enable")
    retried = await live.call("POST", f"/api/v1/admin/deliveries/{dlv}/retry")
    since = (utcnow() - timedelta(hours=1)).isoformat()
    recovered = await live.call("POST", f"/api/v1/admin/subscriptions/{sub}/recover", {"since": since})

    assert customers.status == 200 and [c["id"] for c in customers.body["data"]] == [CUSTOMER]
    assert customers.body["data"][0]["subscriptions"] == 1 and customers.body["next_cursor"] is None
    assert keys.status == 200 and [k["customer_id"] for k in keys.body["data"]] == [CUSTOMER]
    assert "key" not in keys.body["data"][0] and live.key not in json.dumps(keys.body)
    assert [(s["id"], s["state"]) for s in active.body["data"]] == [(sub, "active")]
    assert disabled.body == {"data": [], "next_cursor": None}
    assert (enabled.status, enabled.body["id"], enabled.body["customer_id"]) == (200, sub, CUSTOMER)
    assert (retried.status, retried.body["id"], retried.body["status"]) == (202, dlv, "pending")
    assert (recovered.status, recovered.body) == (202, {"requeued": 0, "more": False})


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_unknown_ids_and_bad_filters_are_404_and_400(both: dict[str, Live], backend: str) -> None:
    live = both[backend]

    missing = [
        await live.call("GET", "/api/v1/admin/customers/nobody/keys"),
        await live.call("POST", "/api/v1/admin/keys/key_01NOPE/revoke"),
        await live.call("POST", "/api/v1/admin/keys/nope/revoke"),
        await live.call("POST", "/api/v1/admin/subscriptions/sub_01NOPE/enable"),
        await live.call("POST", "/api/v1/admin/deliveries/dlv_01NOPE/retry"),
        await live.call(
            "POST", "/api/v1/admin/subscriptions/sub_01NOPE/recover", {"since": "2026-01-01T00:00:00Z"}
        ),
    ]
    bad = [
        await live.call("GET", "/api/v1/admin/subscriptions"),
        await live.call("GET", f"/api/v1/admin/subscriptions?customer_id={CUSTOMER}&state=sleepy"),
        await live.call("GET", "/api/v1/admin/customers?cursor=no%20spaces"),
    ]

    assert [r.error for r in missing] == [(404, "not_found")] * len(missing)
    assert [r.status for r in bad] == [400, 400, 400]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_key_revoked_through_the_admin_api_is_refused_by_the_next_request(
    both: dict[str, Live], backend: str
) -> None:
    live = both[backend]
    created = await live.call("POST", "/api/v1/keys", {"customer_id": "globex", "scopes": ["read_events"]})
    victim = created.body["key"]
    async with live.http.get(f"{live.base}/api/v1/auth/whoami", headers=auth(victim)) as before:
        assert before.status == 200  # used once, so this node has it cached

    revoked = await live.call("POST", f"/api/v1/admin/keys/{created.body['id']}/revoke")

    async with live.http.get(f"{live.base}/api/v1/auth/whoami", headers=auth(victim)) as after:
        assert after.status == 401
    assert (revoked.status, revoked.body["id"]) == (200, created.body["id"])
    assert revoked.body["revoked_at"] is not None


# -- two API nodes on one PostgreSQL schema ----------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> dict[str, str]:
    done = subprocess.run(webhookd_command(*args), env=env, capture_output=True, text=True, check=True)
    parsed: dict[str, str] = json.loads(done.stdout)
    return parsed


async def _status(http: aiohttp.ClientSession, base: str, key: str) -> int:
    async with http.get(f"{base}/api/v1/auth/whoami", headers=auth(key)) as reply:
        return reply.status


async def _refused_within(http: aiohttp.ClientSession, base: str, key: str, deadline_s: float) -> None:
    """Poll until ``base`` refuses ``key`` with 401 (the NOTIFY's trip); fail past ``deadline_s``."""
    began = time.monotonic()
    while (status := await _status(http, base, key)) != 401:
        assert status == 200 and time.monotonic() - began < deadline_s, status
        await asyncio.sleep(0.005)


async def _cached_on(http: aiohttp.ClientSession, nodes: tuple[str, ...], key: str) -> float:
    """Use ``key`` once on each node, so each caches it; returns when caching began (monotonic): the
    entries trust the key until ``KEY_CACHE_TTL_S`` after that at the earliest."""
    began = time.monotonic()
    assert [await _status(http, node, key) for node in nodes] == [200] * len(nodes)
    return began


async def test_a_revoked_key_is_refused_by_every_postgres_api_node(schema: str, tmp_path: Path) -> None:
    """Two ``serve --no-workers`` nodes on one schema, each with the key cached (used once on each).
    Revoked through node A's admin API: A refuses it on the very next request; B once the NOTIFY
    arrives, polled for at most ``NOTIFY_DEADLINE_S``. Revoked by the CLI (a third process): both
    nodes once the NOTIFY arrives, as bounded. Each refusal comes before the cache entries could have
    expired (``KEY_CACHE_TTL_S``): only the revocation's NOTIFY can have caused it."""
    ports = [free_port(), free_port()]
    env = subprocess_env(
        {
            "WEBHOOKD_DATABASE_URL": f"{POSTGRES_DSN}?search_path={schema}",
            "WEBHOOKD_RATE_LIMIT_PER_MIN": "100000",
        }
    )
    admin = _cli(env, "keys", "create", "--json", "--customer", "ops", "--scopes", "admin")["key"]
    victims = [
        _cli(env, "keys", "create", "--json", "--customer", "acme", "--scopes", "read_events")
        for _ in range(2)
    ]
    a, b = (f"http://127.0.0.1:{port}" for port in ports)
    async with (
        aiohttp.ClientSession() as http,
        webhookd_process(
            {**env, "WEBHOOKD_PORT": str(ports[0])}, a, tmp_path / "a.log", "serve", "--no-workers"
        ),
        webhookd_process(
            {**env, "WEBHOOKD_PORT": str(ports[1])}, b, tmp_path / "b.log", "serve", "--no-workers"
        ),
    ):
        cached = await _cached_on(http, (a, b), victims[0]["key"])
        async with http.post(
            f"{a}/api/v1/admin/keys/{victims[0]['id']}/revoke", headers=auth(admin)
        ) as revoked:
            assert revoked.status == 200
        assert await _status(http, a, victims[0]["key"]) == 401  # the revoking node: the very next request
        await _refused_within(http, b, victims[0]["key"], NOTIFY_DEADLINE_S)
        assert time.monotonic() - cached < KEY_CACHE_TTL_S

        cached = await _cached_on(http, (a, b), victims[1]["key"])
        await asyncio.to_thread(_cli, env, "keys", "revoke", victims[1]["id"], "--json")
        for node in (a, b):
            await _refused_within(http, node, victims[1]["key"], NOTIFY_DEADLINE_S)
        assert time.monotonic() - cached < KEY_CACHE_TTL_S
