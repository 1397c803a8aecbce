"""The Store contract for an operator's actions, on every backend: a subscription or delivery found by
id alone, subscriptions listed by state, and a key revocation heard of by every store on the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contract.conftest import CIRCUIT
from tests.contract.test_store_contract import ACME, OTHER, claim_one, make_event, subscribe
from tests.contract.test_store_operator import _key, _troubled
from webhookd.models import SubscriptionState, utcnow
from webhookd.store.base import PageRequest, Store
from webhookd.store.postgres import PostgresStore
from webhookd.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

NOTIFY_DEADLINE_S = 1.0
"""How long another PostgreSQL store may take to hear a revocation's NOTIFY."""


@pytest.fixture
async def twin(store: Store, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A second store on the same database, as another process (a CLI, another API node) opens it."""
    other: Store
    if isinstance(store, PostgresStore):
        server = request.getfixturevalue("postgres_server")
        other = PostgresStore(server.dsn, schema=server.schema, circuit=CIRCUIT)
    else:
        other = SqliteStore(tmp_path / "w.db", circuit=CIRCUIT)
    await other.open()
    try:
        yield other
    finally:
        await other.close()


async def test_a_subscription_is_found_by_id_alone_for_an_operator_and_by_its_customer(store: Store) -> None:
    sub = await subscribe(store, ACME)

    assert await store.get_subscription(None, sub.id) == sub
    assert await store.get_subscription(ACME, sub.id) == sub
    assert await store.get_subscription(OTHER, sub.id) is None
    await store.delete_subscription(ACME, sub.id)
    assert await store.get_subscription(None, sub.id) is None


async def test_a_delivery_is_found_by_id_alone_for_an_operator_and_by_its_customer(store: Store) -> None:
    await subscribe(store, ACME)
    await store.publish(make_event(ACME))
    job = await claim_one(store)

    found = await store.get_delivery(None, job.delivery_id)

    assert found is not None and found.delivery.customer_id == ACME
    assert await store.get_delivery(ACME, job.delivery_id) == found
    assert await store.get_delivery(OTHER, job.delivery_id) is None
    assert await store.get_delivery(None, "dlv_missing") is None


async def test_subscriptions_are_listed_by_state(store: Store) -> None:
    _, failing, disabled = await _troubled(store)
    healthy = await subscribe(store, OTHER, "https://hooks.example.com/fine")

    async def ids(state: SubscriptionState | None, limit: int = 100) -> list[str]:
        return [s.id for s in (await store.list_subscriptions(OTHER, PageRequest(limit), state)).items]

    assert await ids(None) == sorted([failing, disabled, healthy.id])
    assert await ids(SubscriptionState.ACTIVE) == [healthy.id]
    assert await ids(SubscriptionState.FAILING) == [failing]
    assert await ids(SubscriptionState.DISABLED) == [disabled]
    first = await store.list_subscriptions(OTHER, PageRequest(1), SubscriptionState.DISABLED)
    assert [s.state for s in first.items] == [SubscriptionState.DISABLED] and first.next_cursor is None


async def test_a_revocation_changes_key_revocations_here_at_once_and_in_every_other_store(
    store: Store, twin: Store
) -> None:
    key = await _key(store, ACME)
    before_here, before_there = store.key_revocations(), twin.key_revocations()
    await store.revoke_api_key(None, "key_missing", utcnow())  # nothing revoked: nothing to hear of
    assert store.key_revocations() == before_here

    assert await twin.revoke_api_key(None, key.id, utcnow()) is not None

    assert twin.key_revocations() != before_there  # the revoking store: when the call returns
    # The other store: at once on SQLite (a file's time); on PostgreSQL when its NOTIFY arrives.
    deadline = time.monotonic() + NOTIFY_DEADLINE_S
    while store.key_revocations() == before_here and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert store.key_revocations() != before_here
