"""The Store contract for the dashboard, on every backend: single-use links kept by their token's
hash, a page of deliveries' attempts in one read, and a customer's attempts over a window by bucket."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from tests.contract.test_store_contract import (
    ACME,
    OTHER,
    claim,
    claim_one,
    later,
    make_event,
    outcome,
    subscribe,
)
from webhookd.models import DashboardAccess, utcnow
from webhookd.store.base import Store

pytestmark = pytest.mark.anyio

HASH = "a" * 64
AS_ACME = DashboardAccess.of_customer(ACME)


# -- links -------------------------------------------------------------------------------------


async def test_a_link_is_redeemed_once_for_its_customer(store: Store) -> None:
    await store.ensure_customer(ACME)
    now = utcnow()
    await store.create_dashboard_link(HASH, AS_ACME, now, now + timedelta(minutes=15))

    assert await store.redeem_dashboard_link(HASH, now) == AS_ACME
    assert await store.redeem_dashboard_link(HASH, now) is None


async def test_an_expired_link_is_refused_and_stays_unused(store: Store) -> None:
    await store.ensure_customer(ACME)
    now = utcnow()
    await store.create_dashboard_link(HASH, AS_ACME, now, now + timedelta(minutes=15))

    assert await store.redeem_dashboard_link(HASH, now + timedelta(minutes=15)) is None
    assert await store.redeem_dashboard_link(HASH, now + timedelta(minutes=14)) == AS_ACME


async def test_an_unknown_token_hash_is_refused(store: Store) -> None:
    assert await store.redeem_dashboard_link(HASH, utcnow()) is None


async def test_a_link_opened_twice_at_once_gives_one_session(store: Store) -> None:
    await store.ensure_customer(ACME)
    now = utcnow()
    await store.create_dashboard_link(HASH, AS_ACME, now, now + timedelta(minutes=15))

    results = await asyncio.gather(*(store.redeem_dashboard_link(HASH, now) for _ in range(8)))

    assert (results.count(AS_ACME), results.count(None)) == (1, 7)


# -- attempts ----------------------------------------------------------------------------------


async def _attempted(store: Store, customer_id: str, *, succeeded: bool) -> str:
    """One delivery of a new event for the customer, attempted once; returns its id."""
    await store.publish(make_event(customer_id))
    job = await claim_one(store, later(1))
    await store.record_attempts([outcome(job, succeeded=succeeded, next_attempt_at=later(3600))])
    return job.delivery_id


async def test_list_attempts_reads_a_page_of_deliveries_for_their_owner_only(store: Store) -> None:
    await subscribe(store, ACME)
    await subscribe(store, OTHER)
    first = await _attempted(store, ACME, succeeded=True)
    second = await _attempted(store, ACME, succeeded=False)
    others = await _attempted(store, OTHER, succeeded=False)

    found = await store.list_attempts(ACME, [first, second, others])

    assert set(found) == {first, second}
    assert [(a.attempt_no, a.status_code, a.response_excerpt) for a in found[second]] == [(1, 500, b"boom")]
    assert [a.succeeded for a in found[first]] == [True]
    assert await store.list_attempts(ACME, []) == {}


async def test_activity_counts_attempts_by_bucket_with_the_latest(store: Store) -> None:
    sub = await subscribe(store, ACME)
    other = await subscribe(store, OTHER)
    await store.publish(make_event(ACME))
    await store.publish(make_event(OTHER))
    jobs = await claim(store, later(1))
    start = utcnow() - timedelta(hours=3)
    mine = next(job for job in jobs if job.subscription_id == sub.id)
    theirs = next(job for job in jobs if job.subscription_id == other.id)
    results = [
        dataclasses.replace(
            outcome(mine, succeeded=False, next_attempt_at=later(1)), started_at=start + timedelta(minutes=30)
        ),
        dataclasses.replace(outcome(theirs, succeeded=True), started_at=start + timedelta(minutes=30)),
    ]
    await store.record_attempts(results)
    retry = await claim_one(store, later(3600 * 24))
    await store.record_attempts(
        [dataclasses.replace(outcome(retry, succeeded=True), started_at=start + timedelta(minutes=150))]
    )

    activity = await store.subscription_activity(ACME, start, 3600)

    tallies = {(t.subscription_id, t.bucket): (t.attempts, t.succeeded) for t in activity.tallies}
    assert tallies == {(sub.id, 0): (1, 0), (sub.id, 2): (1, 1)}
    latest = activity.last_attempts[sub.id]
    assert (latest.attempt_no, latest.succeeded) == (2, True)
    assert set(activity.last_attempts) == {sub.id}


async def test_activity_leaves_out_attempts_before_the_window(store: Store) -> None:
    await subscribe(store, ACME)
    await _attempted(store, ACME, succeeded=True)

    activity = await store.subscription_activity(ACME, utcnow() + timedelta(seconds=60), 3600)

    assert (list(activity.tallies), dict(activity.last_attempts)) == ([], {})
