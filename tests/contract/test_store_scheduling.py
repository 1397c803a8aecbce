"""The claim rules every store keeps: due work shared across subscriptions, a cap on one subscription's
attempts in flight counting every worker, and a walk that reaches every subscription with due work."""

from __future__ import annotations

import collections
from datetime import timedelta

import pytest

from tests.contract.test_store_contract import ACME, claim, make_event, outcome, subscribe
from webhookd.models import utcnow
from webhookd.store.base import Store
from webhookd.store.scheduling import FAIR_SHARES

pytestmark = pytest.mark.anyio


async def _publish(store: Store, count: int) -> None:
    for _ in range(count):
        await store.publish(make_event())


async def test_one_subscriptions_older_backlog_does_not_fill_a_claim(store: Store) -> None:
    """A's 100 deliveries were due first; B's 5 still get into the very next claim."""
    a = await subscribe(store, url="https://a.example.com/hook")
    await _publish(store, 100)
    b = await subscribe(store, url="https://b.example.com/hook")
    published = [await store.publish(make_event()) for _ in range(5)]
    assert [p.deliveries for p in published] == [2] * 5

    jobs = await claim(store, utcnow() + timedelta(seconds=1), limit=40)

    by_sub = collections.Counter(job.subscription_id for job in jobs)
    assert by_sub[b.id] == 5
    assert by_sub[a.id] == 35  # the rest of the batch: A is not starved either


async def test_the_cap_counts_what_is_in_flight_until_it_is_recorded(store: Store) -> None:
    await subscribe(store)
    await _publish(store, 20)
    at = utcnow()

    first = await claim(store, at, cap=4)
    assert len(first) == 4
    assert await claim(store, at, cap=4) == []  # four in flight: nothing more for it

    await store.record_attempts([outcome(first[0], succeeded=True)])
    assert len(await claim(store, at, cap=4)) == 1


async def test_the_cap_counts_every_workers_claims(store: Store) -> None:
    await subscribe(store)
    await _publish(store, 20)
    at = utcnow()
    await store.register_worker("wkr_other", at)

    mine = await claim(store, at, cap=6, limit=4)
    theirs = await claim(store, at, cap=6, worker="wkr_other")

    assert (len(mine), len(theirs)) == (4, 2)


async def test_successive_claims_reach_every_subscription_with_due_work(store: Store) -> None:
    """Thirty subscriptions, each with more due than a claim of 8 could take from all of them: four
    claims reach every one, instead of draining the first ones' backlogs."""
    subs = [await subscribe(store, url=f"https://hooks.example.com/{n}") for n in range(30)]
    await _publish(store, 4)
    at = utcnow() + timedelta(seconds=1)

    reached: set[str] = set()
    for _ in range(4):
        reached |= {job.subscription_id for job in await claim(store, at, limit=FAIR_SHARES)}

    assert reached == {sub.id for sub in subs}


async def test_a_subscription_with_nothing_due_yet_does_not_cost_a_claim_its_batch(store: Store) -> None:
    later_sub = await subscribe(store, url="https://later.example.com/hook")
    await store.publish(make_event(), delay_s=60)
    now_sub = await subscribe(store, url="https://now.example.com/hook")
    await _publish(store, 3)

    jobs = await claim(store, utcnow() + timedelta(seconds=1), limit=10)

    counts = collections.Counter(job.subscription_id for job in jobs)
    assert counts == {now_sub.id: 3, later_sub.id: 3}  # the delayed one waits; the others are due


async def test_another_customers_deliveries_are_claimed_alongside(store: Store) -> None:
    mine = await subscribe(store)
    theirs = await subscribe(store, "cus_other", url="https://other.example.com/hook")
    await _publish(store, 50)
    await store.publish(make_event("cus_other"))

    jobs = await claim(store, utcnow() + timedelta(seconds=1), limit=10, cap=5)

    counts = collections.Counter(job.subscription_id for job in jobs)
    assert counts == {mine.id: 5, theirs.id: 1}
    assert all(job.customer_id in (ACME, "cus_other") for job in jobs)
