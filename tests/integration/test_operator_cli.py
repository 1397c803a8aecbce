"""The operator's commands as real processes (``python -m webhookd ...``) on a real SQLite file and on
PostgreSQL: each ``--json`` output parsed, the table once, unknown ids answered with exit 1 and what
to do, and a key revoked by the CLI refused at once by the server running on the same SQLite file."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.contract.conftest import LIVE_WORKER, PostgresServer, postgres_server  # noqa: F401 (a fixture)
from tests.contract.test_store_circuit import gone
from tests.contract.test_store_contract import ACME, OTHER, claim, make_event, subscribe
from tests.contract.test_store_manage import failed_delivery
from tests.integration.harness import (
    auth,
    create_key,
    postgres_database_url,
    running_server,
    server_settings,
    subprocess_env,
    webhookd_command,
)
from webhookd.models import Scope, utcnow
from webhookd.store.base import Store
from webhookd.store.postgres import PostgresStore
from webhookd.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return orjson.loads(self.out)


async def webhookd(database_url: str, *args: str) -> Ran:
    """Run one command as the operator would, against the database ``database_url``."""
    env = subprocess_env({"WEBHOOKD_DATABASE_URL": database_url})
    process = await asyncio.create_subprocess_exec(
        *webhookd_command(*args), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


@dataclasses.dataclass
class World:
    url: str
    """The database's URL."""
    db: Path | None
    """The SQLite file, or ``None`` on PostgreSQL."""
    key: str
    acme_sub: str
    failed: list[str]
    """ACME's failed deliveries, oldest first."""
    disabled: str
    """OTHER's subscription, disabled by a 410."""


@pytest.fixture(params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    postgres = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    return await _world_on(postgres, tmp_path)


@pytest.fixture
async def sqlite_world(tmp_path: Path) -> World:
    return await _world_on(None, tmp_path)


async def _world_on(postgres: PostgresServer | None, tmp_path: Path) -> World:
    """A seeded database: a new PostgreSQL schema, or a SQLite file when ``postgres`` is ``None``."""
    db: Path | None = None
    store: Store
    if postgres is not None:
        schema = postgres.new_schema()
        url = await postgres_database_url(postgres.dsn, schema)
        store = PostgresStore(postgres.dsn, schema=schema)
    else:
        db = tmp_path / "w.db"
        url, store = f"sqlite:///{db}", SqliteStore(db)
    await store.open()
    try:
        seeded = await _seed(store)
    finally:
        await store.close()
    return World(url, db, *seeded)


async def _seed(store: Store) -> tuple[str, str, list[str], str]:
    """ACME's key, its subscription with three failed deliveries; OTHER's subscription disabled by a 410."""
    await store.register_worker(LIVE_WORKER, utcnow())
    key = await create_key(store, ACME, {Scope.MANAGE_WEBHOOKS}, "Acme Inc")
    acme_sub = await subscribe(store, ACME)
    failed = [await failed_delivery(store) for _ in range(3)]
    disabled = await subscribe(store, OTHER, "https://hooks.example.com/gone")
    await store.publish(make_event(OTHER))
    (job,) = await claim(store)
    await store.record_attempts([gone(job)])
    return key, acme_sub.id, failed, disabled.id


async def test_customers_and_keys_are_listed_as_json_and_a_key_is_revoked(world: World) -> None:
    customers = (await webhookd(world.url, "customers", "list", "--json")).json()
    keys = (await webhookd(world.url, "keys", "list", "--customer", ACME, "--json")).json()
    (key,) = keys
    revoked = (await webhookd(world.url, "keys", "revoke", key["id"], "--json")).json()
    after = (await webhookd(world.url, "keys", "list", "--customer", ACME, "--json")).json()

    counts = {
        c["id"]: (c["name"], c["subscriptions"], c["failing"], c["disabled"], c["keys"]) for c in customers
    }
    assert counts == {ACME: ("Acme Inc", 1, 0, 0, 1), OTHER: (None, 1, 0, 1, 0)}
    assert set(key) == {"id", "customer_id", "name", "scopes", "created_at", "last_used_at", "revoked_at"}
    assert key["scopes"] == ["manage_webhooks"] and key["revoked_at"] is None
    assert world.key not in str(keys)  # the key itself is never shown again
    assert revoked["id"] == key["id"] and revoked["revoked_at"] is not None
    assert after == [revoked]


async def test_subscriptions_are_listed_by_state_and_another_customers_is_re_enabled(world: World) -> None:
    every = (await webhookd(world.url, "subscriptions", "list", "--customer", OTHER, "--json")).json()
    disabled = await webhookd(
        world.url, "subscriptions", "list", "--customer", OTHER, "--state", "disabled", "--json"
    )
    active = await webhookd(
        world.url, "subscriptions", "list", "--customer", OTHER, "--state", "active", "--json"
    )
    enabled = (await webhookd(world.url, "subscriptions", "enable", world.disabled, "--json")).json()
    now_active = await webhookd(
        world.url, "subscriptions", "list", "--customer", OTHER, "--state", "active", "--json"
    )

    assert [(s["id"], s["state"], s["customer_id"]) for s in every] == [(world.disabled, "disabled", OTHER)]
    assert disabled.json() == every and active.json() == []
    assert (enabled["id"], enabled["state"], enabled["is_active"]) == (world.disabled, "active", True)
    assert now_active.json() == [enabled]


async def test_a_delivery_is_retried_and_failed_ones_are_recovered_with_progress_on_stderr(
    world: World,
) -> None:
    retried = (await webhookd(world.url, "deliveries", "retry", world.failed[0], "--json")).json()
    since = (utcnow() - timedelta(hours=1)).isoformat()
    recover = await webhookd(
        world.url, "deliveries", "recover", "--subscription", world.acme_sub, "--since", since, "--json"
    )
    again = await webhookd(
        world.url, "deliveries", "recover", "--subscription", world.acme_sub, "--since", since, "--json"
    )

    assert (retried["id"], retried["status"]) == (world.failed[0], "pending")
    assert recover.json() == {
        "subscription_id": world.acme_sub,
        "customer_id": ACME,
        "requeued": 2,
        "more": False,
    }
    assert "requeued 2 of 2 failed deliveries" in recover.err
    assert again.json()["requeued"] == 0 and "requeued 0 of 0" in again.err


async def test_the_table_is_aligned_under_its_header(world: World) -> None:
    ran = await webhookd(world.url, "customers", "list")

    header, *rows = ran.out.splitlines()
    assert ran.code == 0 and header.split() == [
        "id",
        "name",
        "subscriptions",
        "failing",
        "disabled",
        "keys",
        "created_at",
    ]
    assert [row.split()[0] for row in rows] == [ACME, OTHER]
    starts = [header.index(column) for column in ("name", "subscriptions", "keys")]
    assert rows[1][starts[0] : starts[0] + 1] == "-"  # OTHER has no name: shown as -
    for row in rows:
        assert all(row[start - 2 : start] == "  " for start in starts)  # every column where its header is


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("keys", "revoke", "key_01NOPE"), "list keys with `webhookd keys list --customer ID`"),
        (("keys", "list", "--customer", "nobody"), "list customers with `webhookd customers list`"),
        (("subscriptions", "list", "--customer", "nobody"), "list customers with `webhookd customers list`"),
        (("subscriptions", "enable", "sub_01NOPE"), "`webhookd subscriptions list --customer ID`"),
        (("deliveries", "retry", "dlv_01NOPE"), "/api/v1/webhook-subscriptions/SUB_ID/deliveries"),
        (
            ("deliveries", "recover", "--subscription", "not-an-id", "--since", "2026-01-01T00:00:00Z"),
            "no subscription",
        ),
    ],
)
async def test_an_unknown_id_exits_1_saying_what_to_do(
    world: World, args: tuple[str, ...], says: str
) -> None:
    ran = await webhookd(world.url, *args, "--json")

    assert (ran.code, ran.out) == (1, "")
    assert says in ran.err and "Traceback" not in ran.err


async def test_a_bad_time_or_state_is_a_usage_error(world: World) -> None:
    bad_time = await webhookd(
        world.url, "deliveries", "recover", "--subscription", world.acme_sub, "--since", "yesterday"
    )
    bad_state = await webhookd(world.url, "subscriptions", "list", "--customer", ACME, "--state", "sleepy")

    assert bad_time.code == 2 and "ISO 8601" in bad_time.err
    assert bad_state.code == 2 and "invalid choice" in bad_state.err


async def test_a_key_revoked_by_the_cli_is_refused_by_the_running_server_at_once(
    sqlite_world: World,
) -> None:
    """The server caches the key after its first use; the CLI (another process) revokes it; the very
    next request is a 401, with no wait. (PostgreSQL's nodes: see test_admin_api.)"""
    world = sqlite_world
    assert world.db is not None
    async with (
        running_server(server_settings(world.db), run_workers=False) as base,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{base}/api/v1/auth/whoami", headers=auth(world.key)) as first:
            assert first.status == 200
        (key,) = (await webhookd(world.url, "keys", "list", "--customer", ACME, "--json")).json()
        assert (await webhookd(world.url, "keys", "revoke", key["id"])).code == 0
        async with http.get(f"{base}/api/v1/auth/whoami", headers=auth(world.key)) as after:
            assert after.status == 401
