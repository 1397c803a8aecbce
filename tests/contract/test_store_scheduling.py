"""The claim rules every store keeps: due work shared across subscriptions, a cap on one subscription's
attempts in flight counting every worker, a walk that reaches every subscription with due work, a
paced subscription's slots, and an ordered subscription's one delivery at a time per ordering key."""

from __future__ import annotations

import collections
import itertools
from datetime import datetime, timedelta

import orjson
import pytest

from tests.contract.conftest import LIVE_WORKER, PROBE_AFTER_S
from tests.contract.test_store_circuit import failure
from tests.contract.test_store_contract import ACME, claim, make_event, outcome, subscribe
from webhookd.models import DeliveryJob, NewEvent, Subscription, utcnow
from webhookd.store.base import Store, SubscriptionUpdate
from webhookd.store.scheduling import (
    FAIR_SHARES,
    PACE_AHEAD_S,
    PACING_HEADROOM,
    SOLE_HOLDER_AHEAD,
    ClaimRequest,
    ended_key,
)

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
    """A worker that alone holds the subscription's claims may hold SOLE_HOLDER_AHEAD times the cap
    (it sends no more than the cap at once); then nothing more until one is recorded."""
    await subscribe(store)
    await _publish(store, 20)
    at = utcnow()

    first = await claim(store, at, cap=4)
    assert len(first) == 4 * SOLE_HOLDER_AHEAD
    assert await claim(store, at, cap=4) == []

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


async def test_while_another_worker_holds_a_claim_the_cap_itself_bounds_every_claim(store: Store) -> None:
    await subscribe(store)
    await _publish(store, 20)
    at = utcnow()
    await store.register_worker("wkr_other", at)

    theirs = await claim(store, at, cap=4, limit=1, worker="wkr_other")
    mine = await claim(store, at, cap=4)
    again = await claim(store, at, cap=4, worker="wkr_other")

    assert (len(theirs), len(mine), again) == (1, 3, [])  # four in flight in all, however claimed


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

    jobs = await claim(store, utcnow() + timedelta(seconds=1), limit=10, cap=3)

    counts = collections.Counter(job.subscription_id for job in jobs)
    assert counts == {mine.id: 3 * SOLE_HOLDER_AHEAD, theirs.id: 1}
    assert all(job.customer_id in (ACME, "cus_other") for job in jobs)


# -- pacing ----------------------------------------------------------------------------------------


async def _with(store: Store, sub: Subscription, update: SubscriptionUpdate) -> Subscription:
    changed = await store.update_subscription(sub.customer_id, sub.id, update)
    assert changed is not None
    return changed


async def test_a_paced_subscription_is_claimed_one_second_of_slots_at_a_time(store: Store) -> None:
    sub = await _with(store, await subscribe(store), SubscriptionUpdate(rate_limit_per_second=5))
    assert sub.rate_limit_per_second == 5
    await _publish(store, 20)
    at = utcnow() + timedelta(seconds=1)

    first = await claim(store, at, cap=100)
    again = await claim(store, at, cap=100)

    assert len(first) == 5 and again == []  # the next second's five slots, then none until it passes
    slots = _slots(first)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]
    assert gaps == pytest.approx([PACING_HEADROOM / 5] * 4)
    next_second = _slots(await claim(store, at + timedelta(seconds=PACE_AHEAD_S), cap=100))
    assert len(next_second) == 5 and next_second[0] > slots[-1]


def _slots(jobs: list[DeliveryJob]) -> list[datetime]:
    slots = sorted(job.not_before for job in jobs if job.not_before is not None)
    assert len(slots) == len(jobs), "every paced job has its slot"
    return slots


async def test_removing_the_limit_frees_the_subscription_at_once(store: Store) -> None:
    sub = await _with(store, await subscribe(store), SubscriptionUpdate(rate_limit_per_second=2))
    await _publish(store, 10)
    at = utcnow() + timedelta(seconds=1)
    assert len(await claim(store, at, cap=100)) == 2

    cleared = await _with(store, sub, SubscriptionUpdate(rate_limit_per_second=0))

    assert cleared.rate_limit_per_second is None
    rest = await claim(store, at, cap=100)
    assert len(rest) == 8 and all(job.not_before is None for job in rest)


# -- ordering --------------------------------------------------------------------------------------


def _call_event(call: str, n: int) -> NewEvent:
    return NewEvent(ACME, "call.completed", {"call": call, "n": n}, ordering_key=call)


async def test_an_ordered_subscription_gets_only_the_oldest_unfinished_delivery_of_each_key(
    store: Store,
) -> None:
    await _with(store, await subscribe(store), SubscriptionUpdate(ordered=True))
    for n in range(3):
        for call in ("call-a", "call-b"):
            await store.publish(_call_event(call, n))
    await store.publish(make_event())  # no key: never waits for another
    at = utcnow() + timedelta(seconds=1)

    heads = await claim(store, at)

    assert len(heads) == 3
    assert {_sent(job) for job in heads} == {("call-a", 0), ("call-b", 0), (None, None)}
    assert await claim(store, at) == []


async def test_a_failed_head_holds_its_key_back_until_it_succeeds(store: Store) -> None:
    await _with(store, await subscribe(store), SubscriptionUpdate(ordered=True))
    for n in range(3):
        await store.publish(_call_event("call-a", n))
    at = utcnow() + timedelta(seconds=1)

    (head,) = await claim(store, at)
    await store.record_attempts([failure(head)])
    assert await claim(store, at + timedelta(seconds=1)) == []  # n=1 waits behind n=0's retry

    probe_time = at + timedelta(seconds=PROBE_AFTER_S + 1)
    (retried,) = await claim(store, probe_time)
    assert retried.delivery_id == head.delivery_id
    await store.record_attempts([outcome(retried, succeeded=True)])
    (following,) = await claim(store, probe_time)
    assert _sent(following) == ("call-a", 1)


async def test_an_unordered_subscription_sends_a_keys_deliveries_side_by_side(store: Store) -> None:
    await subscribe(store)
    for n in range(3):
        await store.publish(_call_event("call-a", n))

    assert len(await claim(store, utcnow() + timedelta(seconds=1))) == 3


def _sent(job: DeliveryJob) -> tuple[str | None, int | None]:
    data = orjson.loads(job.payload)["data"]
    return data.get("call"), data.get("n")


async def test_a_failing_ordered_subscriptions_probe_is_the_head_of_its_key(store: Store) -> None:
    """a-0 is in flight when b-0's failure holds the subscription: the probe is b-0, never a-1,
    which would overtake a-0."""
    await _with(store, await subscribe(store), SubscriptionUpdate(ordered=True))
    for call, n in (("call-a", 0), ("call-a", 1), ("call-b", 0)):
        await store.publish(_call_event(call, n))
    at = utcnow() + timedelta(seconds=1)
    heads = {_sent(job): job for job in await claim(store, at)}
    assert set(heads) == {("call-a", 0), ("call-b", 0)}

    await store.record_attempts([failure(heads["call-b", 0])])

    (probe,) = await claim(store, at + timedelta(seconds=PROBE_AFTER_S + 1))
    assert _sent(probe) == ("call-b", 0)


async def test_attempts_that_ended_but_are_not_recorded_leave_room_under_the_cap(store: Store) -> None:
    await subscribe(store)
    await _publish(store, 10)
    at = utcnow() + timedelta(seconds=1)

    def ended(*jobs: DeliveryJob) -> tuple[str, ...]:
        return tuple(ended_key(job.delivery_id, job.attempt_no) for job in jobs)

    async def claim_after(keys: tuple[str, ...]) -> list[DeliveryJob]:
        return await store.claim_deliveries(ClaimRequest(LIVE_WORKER, 100, 4, at, keys))

    first = await claim_after(())
    assert len(first) == 4 * SOLE_HOLDER_AHEAD
    assert len(await claim_after(ended(*first[:2]))) == 2
    assert await claim_after((f"{first[2].delivery_id}:{first[2].attempt_no + 1}",)) == []  # not that attempt

    await store.record_attempts([outcome(job, succeeded=True) for job in first[:2]])
    assert await claim_after(ended(*first[:2])) == []  # recorded: counted once, not twice


# -- what the gauges show --------------------------------------------------------------------------


async def test_paced_and_ordered_waiting_deliveries_count_as_waiting_in_the_gauges(store: Store) -> None:
    """Work a pace or an ordering key holds back is due and waiting: the scrape counts it pending and
    ages it from its due time, not from whenever its turn comes."""
    await _with(store, await subscribe(store), SubscriptionUpdate(rate_limit_per_second=1))
    await _publish(store, 3)
    ordered = await subscribe(store, url="https://ordered.example.com/hook")
    await _with(store, ordered, SubscriptionUpdate(ordered=True))
    for n in range(2):
        await store.publish(NewEvent(ACME, "call.completed", {"n": n}, ordering_key="call-a"))
    at = utcnow() + timedelta(seconds=1)

    claimed = collections.Counter(job.subscription_id for job in await claim(store, at, cap=100))
    stats = await store.outbox_stats(at + timedelta(seconds=30))

    assert claimed[ordered.id] == 1 and sum(claimed.values()) == 2  # one paced slot, one key head
    # The paced subscription got all five events and four wait for its pace; one waits behind its key.
    assert stats.deliveries_by_status.get("pending") == 5
    assert 30 < stats.oldest_due_age_s < 60
