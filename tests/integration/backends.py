"""webhookd on SQLite and webhookd on PostgreSQL side by side, for tests that send both the same
requests: each server has an all-scopes key of ``CUSTOMER``, a subscription, an event published to
it and that event's delivery (no workers run, so it stays pending), and optionally carrier sources."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from tests.contract.conftest import PostgresServer
from tests.integration.carrier_signing import credentials, signed_headers
from tests.integration.harness import (
    auth,
    create_key,
    create_source,
    opened_store,
    postgres_database_url,
    running_server,
    server_settings,
)
from webhookd.config import Settings
from webhookd.models import Carrier, Scope
from webhookd.store.base import PageRequest

CUSTOMER = "acme"
HOOK = "http://127.0.0.1:9/hook"
"""Where the seeded subscription points; nothing listens, and no worker sends."""


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def error(self) -> tuple[int, str]:
        code: str = self.body["error"]["code"]
        return self.status, code


@dataclass
class Live:
    """One running webhookd on one backend, and the ids of what was seeded in it."""

    backend: str
    base: str
    settings: Settings
    http: aiohttp.ClientSession
    key: str = field(repr=False)
    sources: dict[Carrier, str] = field(default_factory=dict)
    seeded: dict[str, str] = field(default_factory=dict)
    """``sub``, ``evt`` and ``dlv``: this server's subscription, event and delivery."""

    async def call(self, method: str, path: str, body: Any = None) -> Reply:
        """``body``: bytes as they are, anything else as JSON (NUL written ``\\u0000``). The path
        is sent as written (``%00`` stays ``%00``)."""
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        url = URL(self.base + path, encoded=True)
        async with self.http.request(method, url, data=data, headers=auth(self.key)) as response:
            raw = await response.read()
            return Reply(response.status, json.loads(raw) if raw else None)

    async def ingest(self, carrier: Carrier, body: bytes, query: str = "") -> Reply:
        """Post ``body`` as ``carrier`` would, signed now for the exact URL."""
        url = f"{self.base}/ingest/{carrier.value}/{self.sources[carrier]}{query}"
        headers = signed_headers(carrier, url, body)
        async with self.http.post(URL(url, encoded=True), data=body, headers=headers) as response:
            return Reply(response.status, await response.json())

    async def event_count(self) -> int:
        async with opened_store(self.settings) as store:
            return len((await store.list_events(CUSTOMER, PageRequest(100))).items)

    async def customer_exists(self, customer_id: str) -> bool:
        async with opened_store(self.settings) as store:
            return await store.get_customer(customer_id) is not None

    async def seed(self) -> None:
        subscribe = {"url": HOOK, "events": ["call.completed"]}
        subscription = await self.call("POST", "/api/v1/webhook-subscriptions", subscribe)
        event = await self.call("POST", "/api/v1/events", {"type": "call.completed", "data": {}})
        assert (subscription.status, event.status) == (201, 202), (subscription.body, event.body)
        sub_id = subscription.body["id"]
        deliveries = await self.call("GET", f"/api/v1/webhook-subscriptions/{sub_id}/deliveries")
        (delivery,) = deliveries.body["data"]
        self.seeded = {"sub": sub_id, "evt": event.body["id"], "dlv": delivery["id"]}


@contextlib.asynccontextmanager
async def serving_both(
    tmp_path: Path, postgres: PostgresServer, carriers: Sequence[Carrier] = ()
) -> AsyncIterator[dict[str, Live]]:
    """Both servers, seeded, keyed by backend name (``sqlite``, ``postgres``)."""
    db = tmp_path / "w.db"
    urls = {
        "sqlite": f"sqlite:///{db}",
        "postgres": await postgres_database_url(postgres.dsn, postgres.new_schema()),
    }
    settings = {
        backend: server_settings(db, WEBHOOKD_DATABASE_URL=url, WEBHOOKD_RATE_LIMIT_PER_MIN="1000000")
        for backend, url in urls.items()
    }
    async with (
        aiohttp.ClientSession() as http,
        running_server(settings["sqlite"], run_workers=False) as sqlite_base,
        running_server(settings["postgres"], run_workers=False) as postgres_base,
    ):
        servers = {}
        for backend, base in (("sqlite", sqlite_base), ("postgres", postgres_base)):
            async with opened_store(settings[backend]) as store:
                key = await create_key(store, CUSTOMER, set(Scope))
                sources = {c: await create_source(store, CUSTOMER, c, credentials(c)) for c in carriers}
            live = Live(backend, base, settings[backend], http, key, sources)
            await live.seed()
            servers[backend] = live
        yield servers
