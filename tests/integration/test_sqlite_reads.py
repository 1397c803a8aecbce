"""SQLite reads over real HTTP: listings run side by side on ``WEBHOOKD_SQLITE_READERS``
connections, a publish and a lookup never queue behind a listing, and no read waits on the writer.

Listings are held inside SQLite by a gate the test controls: the trace callback of every aiosqlite
connection webhookd opens, which runs on the connection's own thread as each statement starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import pytest

from tests.integration.harness import eventually, provision_key, running_server, server_settings
from tests.integration.test_management_api import ALL_SCOPES, MANY_CALLS, SUBS, Api, Reply, serving
from webhookd.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

_LISTING = re.compile(r"FROM subscriptions WHERE customer_id = '([^']*)' AND id > ")
GATE_TIMEOUT_S = 30.0
"""A held listing lets itself go after this long, so a failing test cannot hang the server."""
ANSWER_TIMEOUT_S = 10.0


class ListingGate:
    """Holds each subscription listing in its reader thread, as it starts, until ``open()``."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        """The customer of each listing that reached SQLite, in order."""
        self._opened = threading.Event()

    def trace(self, sql: str) -> None:
        listing = _LISTING.search(sql)
        if listing is None:
            return
        self.entered.append(listing[1])  # list.append is atomic: reader threads share it safely
        self._opened.wait(GATE_TIMEOUT_S)

    def open(self) -> None:
        self._opened.set()


@contextlib.asynccontextmanager
async def gated_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readers: int
) -> AsyncIterator[tuple[Api, ListingGate]]:
    """webhookd with ``readers`` list connections; every aiosqlite connection it opens carries the
    gate (monkeypatch wraps aiosqlite.connect only to install the gate on the real connection)."""
    gate = ListingGate()
    connect = aiosqlite.connect

    def traced(*args: Any, **kwargs: Any) -> Awaitable[aiosqlite.Connection]:
        async def opened() -> aiosqlite.Connection:
            conn = await connect(*args, **kwargs)
            await conn.set_trace_callback(gate.trace)
            return conn

        return opened()

    monkeypatch.setattr(aiosqlite, "connect", traced)
    async with serving(tmp_path, WEBHOOKD_SQLITE_READERS=str(readers), **MANY_CALLS) as api:
        try:
            yield api, gate
        finally:
            gate.open()  # before the server shuts down, so no reader thread is left holding


async def answered(call: Awaitable[Reply]) -> Reply:
    """``call``'s answer; fail instead of waiting forever when it is stuck behind something."""
    return await asyncio.wait_for(call, ANSWER_TIMEOUT_S)


async def test_as_many_listings_as_readers_are_in_progress_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gated_server(tmp_path, monkeypatch, readers=3) as (api, gate):
        keys = [await api.key(customer, ALL_SCOPES) for customer in ("acme", "globex", "initech")]
        listings = [asyncio.create_task(api.call("GET", SUBS, key)) for key in keys]
        await eventually(lambda: len(gate.entered) == 3)  # all three inside SQLite together
        assert sorted(gate.entered) == ["acme", "globex", "initech"]
        gate.open()
        assert [reply.status for reply in await asyncio.gather(*listings)] == [200, 200, 200]


async def test_a_publish_and_a_lookup_wait_on_no_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every list connection is busy with customer A's listings, more of A's are queued, and
    customer B's publish (with a key not yet cached) and B's lookup of a subscription are answered."""
    async with gated_server(tmp_path, monkeypatch, readers=1) as (api, gate):
        a_key = await api.key("acme", ALL_SCOPES)
        b_sub = await api.subscribe(await api.key("globex", ALL_SCOPES))
        listings = [asyncio.create_task(api.call("GET", SUBS, a_key)) for _ in range(4)]
        await eventually(lambda: len(gate.entered) == 1)
        b_key = await api.key("globex", ALL_SCOPES)  # its first use: looked up in the database
        published = await answered(api.call("POST", "/api/v1/events", b_key, json={"type": "call.completed"}))
        assert published.status == 202, published.body
        looked_up = await answered(api.call("GET", f"{SUBS}/{b_sub['id']}", b_key))
        assert looked_up.status == 200, looked_up.body
        assert gate.entered == ["acme"] and not any(listing.done() for listing in listings)
        gate.open()
        assert [reply.status for reply in await asyncio.gather(*listings)] == [200] * 4


async def test_reads_are_answered_while_the_writer_is_held_mid_transaction(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", set(ALL_SCOPES))
    store = SqliteStore(db)
    async with (
        running_server(server_settings(db, **MANY_CALLS), store=store) as base,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, base, db)
        sub = await api.subscribe(key)
        await api.publish(key)
        inside, hold = threading.Event(), threading.Event()

        def held(conn: object) -> None:  # runs on the writer thread, inside its transaction
            inside.set()
            hold.wait(GATE_TIMEOUT_S)

        assert store._writer is not None  # private: the one way to hold the writer still
        holding = store._writer.submit(held)
        publish = asyncio.create_task(api.call("POST", "/api/v1/events", key, json={"type": "call.failed"}))
        try:
            await eventually(inside.is_set)
            for path in (SUBS, f"{SUBS}/{sub['id']}", "/api/v1/events", f"{SUBS}/{sub['id']}/deliveries"):
                reply = await answered(api.call("GET", path, key))
                assert (path, reply.status) == (path, 200), reply.body
            assert not publish.done()  # the writer really was held all along
        finally:
            hold.set()
        await holding
        assert (await publish).status == 202
