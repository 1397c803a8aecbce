"""Deep offset paging over real HTTP: ``page`` is bounded (so ``page * limit`` is), and SQLite and
PostgreSQL answer alike at and past the bound. A real uvicorn server, a real SQLite file or the real
PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.contract.conftest import PostgresServer, postgres_server  # noqa: F401 (a fixture)
from tests.integration.harness import provision_key, running_server, server_settings
from tests.integration.test_management_api import ALL_SCOPES, MANY_CALLS, SUBS, Api, Reply, serving
from webhookd.crypto import hash_api_key, new_api_key
from webhookd.models import ApiKey, new_id, utcnow
from webhookd.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio

LISTS = [SUBS, "/api/v1/events", f"{SUBS}/{{sub}}/deliveries"]
MAX_OFFSET = 10_000
"""The most rows a page skips, as the API documents it."""
MAX_PAGE = 100
"""The deepest page: MAX_OFFSET rows at the largest limit."""


async def _postgres_key(store: PostgresStore, customer: str) -> str:
    await store.ensure_customer(customer)
    key = new_api_key()
    await store.create_api_key(
        ApiKey(new_id("key"), customer, hash_api_key(key), frozenset(ALL_SCOPES), None, utcnow())
    )
    return key


@contextlib.asynccontextmanager
async def _on_postgres(server: PostgresServer, tmp_path: Path) -> AsyncIterator[tuple[Api, str]]:
    """webhookd on a fresh schema of the test PostgreSQL, and a key of customer acme."""
    schema = server.new_schema()
    setup = PostgresStore(server.dsn, schema=schema)
    await setup.open()  # creates the schema and its tables before the server starts
    try:
        key = await _postgres_key(setup, "acme")
    finally:
        await setup.close()
    settings = server_settings(tmp_path / "unused.db", WEBHOOKD_DATABASE_URL=server.dsn, **MANY_CALLS)
    store = PostgresStore(server.dsn, schema=schema)
    async with running_server(settings, store=store) as base, aiohttp.ClientSession() as http:
        yield Api(http, base, tmp_path / "unused.db"), key


@contextlib.asynccontextmanager
async def _on_sqlite(tmp_path: Path) -> AsyncIterator[tuple[Api, str]]:
    async with serving(tmp_path, **MANY_CALLS) as api:
        yield api, await provision_key(api.db, "acme", set(ALL_SCOPES))


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Api, str]]:
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        async with _on_postgres(server, tmp_path) as running:
            yield running
    else:
        async with _on_sqlite(tmp_path) as running:
            yield running


async def _lists(api: Api, key: str) -> list[str]:
    """Every list endpoint, with one subscription, one event and its delivery behind them."""
    sub = await api.subscribe(key)
    await api.publish(key)
    return [path.format(sub=sub["id"]) for path in LISTS]


def _error(reply: Reply) -> dict[str, Any]:
    assert reply.status == 400, (reply.status, reply.body)
    error: dict[str, Any] = reply.body["error"]
    return error


async def test_a_page_up_to_the_bound_is_served(backend: tuple[Api, str]) -> None:
    api, key = backend
    for path in await _lists(api, key):
        for query in (f"limit=100&page={MAX_PAGE}", f"limit=1&page={MAX_PAGE}", f"page={MAX_PAGE}"):
            reply = await api.call("GET", f"{path}?{query}", key)
            assert (path, query, reply.status) == (path, query, 200), reply.body
            assert reply.body["data"] == []


async def test_page_past_the_bound_is_400_saying_to_use_the_cursor(backend: tuple[Api, str]) -> None:
    api, key = backend
    for path in await _lists(api, key):
        for query in (f"limit=100&page={MAX_PAGE + 1}", f"limit=1&page={MAX_PAGE + 1}", "page=401"):
            error = _error(await api.call("GET", f"{path}?{query}", key))
            assert error["code"] == "page_too_deep", (path, query, error)
            assert "cursor=" in error["message"] and "next_cursor" in error["message"], error
            assert str(MAX_OFFSET) in error["message"], error


async def test_both_backends_refuse_a_deep_page_with_the_same_answer(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    answers = []
    for name, running in (
        ("sqlite", _on_sqlite(tmp_path / "sqlite")),
        ("postgres", _on_postgres(server, tmp_path / "postgres")),
    ):
        (tmp_path / name).mkdir()
        async with running as (api, key):
            reply = await api.call("GET", f"{SUBS}?limit=50&page=201", key)
            answers.append((reply.status, reply.body))
    assert answers[0] == answers[1]
    assert answers[0][0] == 400


async def test_a_cursor_wins_over_a_page_but_not_over_its_bound(backend: tuple[Api, str]) -> None:
    """The bound holds with a cursor too: a page the document says no list takes is refused."""
    api, key = backend
    for n in range(3):
        await api.subscribe(key, f"https://receiver.example.test/{n}")
    first = await api.call("GET", f"{SUBS}?limit=2", key)
    cursor = first.body["next_cursor"]
    reply = await api.call("GET", f"{SUBS}?limit=2&cursor={cursor}&page={MAX_PAGE}", key)
    assert reply.status == 200, reply.body
    assert len(reply.body["data"]) == 1
    error = _error(await api.call("GET", f"{SUBS}?limit=2&cursor={cursor}&page={MAX_PAGE + 1}", key))
    assert error["code"] == "page_too_deep", error


async def test_a_number_too_long_for_int_is_refused_for_what_it_is(backend: tuple[Api, str]) -> None:
    """Over 4,300 digits int() raises ValueError, which the list handlers take for a bad cursor."""
    api, key = backend
    error = _error(await api.call("GET", f"{SUBS}?page={'9' * 5000}", key))
    assert error["code"] == "page_too_deep", error
    error = _error(await api.call("GET", f"{SUBS}?limit={'9' * 5000}", key))
    assert error == {"code": "invalid_parameter", "message": "limit must be a whole number from 1 to 100"}
