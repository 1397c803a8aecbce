"""One suite for the ``Store`` protocol, run against every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import orjson
import pytest

from tests.contract.conftest import LIVE_WORKER, PROBE_AFTER_S
from webhookd.models import (
    ApiKey,
    AttemptResult,
    Carrier,
    DeliveryJob,
    DeliveryStatus,
    NewEvent,
    Scope,
    Source,
    Subscription,
    new_id,
    utcnow,
)
from webhookd.store.base import PageRequest, Store
from webhookd.store.scheduling import RECLAIM_EVERY_S, ClaimRequest

pytestmark = pytest.mark.anyio

ACME = "cus_acme"
OTHER = "cus_other"
COMPLETED = "call.completed"
GHOST = "wkr_ghost"
"""A worker that claimed and died: no store knows it as alive."""
CAP = 1000
"""No per-subscription cap, for the tests about other rules."""


# -- helpers -------------------------------------------------------------------------------------


def make_subscription(
    customer_id: str = ACME,
    url: str = "https://hooks.example.com/a",
    events: Sequence[str] = (COMPLETED,),
) -> Subscription:
    sub_id = new_id("sub")
    return Subscription(
        id=sub_id,
        customer_id=customer_id,
        url=url,
        events=tuple(events),
        description=None,
        secret=b"fake-ciphertext:" + sub_id.encode(),
        is_active=True,
        created_at=utcnow(),
    )


async def subscribe(
    store: Store,
    customer_id: str = ACME,
    url: str = "https://hooks.example.com/a",
    events: Sequence[str] = (COMPLETED,),
) -> Subscription:
    """Create a new subscription (and its customer) and return it."""
    await store.ensure_customer(customer_id)
    result = await store.create_subscription(make_subscription(customer_id, url, events))
    assert result.created
    return result.subscription


def make_event(
    customer_id: str = ACME, event_type: str = COMPLETED, idempotency_key: str | None = None
) -> NewEvent:
    return NewEvent(customer_id, event_type, {"call_id": "c1"}, idempotency_key=idempotency_key)


async def claim(
    store: Store,
    at: datetime | None = None,
    *,
    limit: int = 100,
    worker: str = LIVE_WORKER,
    cap: int = CAP,
) -> list[DeliveryJob]:
    return await store.claim_deliveries(ClaimRequest(worker, limit, cap, at or utcnow()))


async def claim_one(store: Store, at: datetime | None = None, *, worker: str = LIVE_WORKER) -> DeliveryJob:
    jobs = await claim(store, at, worker=worker)
    assert len(jobs) == 1, jobs
    return jobs[0]


def outcome(job: DeliveryJob, *, succeeded: bool, next_attempt_at: datetime | None = None) -> AttemptResult:
    return AttemptResult(
        delivery_id=job.delivery_id,
        attempt_no=job.attempt_no,
        started_at=utcnow(),
        duration_s=0.01,
        status_code=200 if succeeded else 500,
        error=None if succeeded else "HTTP 500",
        response_excerpt=b"ok" if succeeded else b"boom",
        succeeded=succeeded,
        next_attempt_at=next_attempt_at,
        subscription_id=job.subscription_id,
    )


def later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


# -- customers, keys, sources ------------------------------------------------------------------


async def test_ensure_customer_creates_the_customer(store: Store) -> None:
    customer = await store.ensure_customer("cus_new", "New Co")

    assert (customer.id, customer.name) == ("cus_new", "New Co")


async def test_ensure_customer_with_a_later_name_replaces_it(store: Store) -> None:
    first = await store.ensure_customer("cus_new", "Old Name")

    renamed = await store.ensure_customer("cus_new", "New Name")

    assert (renamed.id, renamed.name) == ("cus_new", "New Name")
    assert renamed.created_at == first.created_at


async def test_ensure_customer_without_a_name_keeps_the_stored_one(store: Store) -> None:
    await store.ensure_customer("cus_new", "Kept")

    again = await store.ensure_customer("cus_new")

    assert again.name == "Kept"


async def test_api_key_is_found_by_its_hash(store: Store) -> None:
    await store.ensure_customer(ACME)
    key = ApiKey(
        id=new_id("key"),
        customer_id=ACME,
        key_hash=hashlib.sha256(b"whd_secret").hexdigest(),
        scopes=frozenset({Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS}),
        name="ci",
        created_at=utcnow(),
    )
    await store.create_api_key(key)

    assert await store.get_api_key(key.key_hash) == key


async def test_unknown_api_key_hash_gives_none(store: Store) -> None:
    assert await store.get_api_key(hashlib.sha256(b"nobody").hexdigest()) is None


async def test_source_is_found_by_id(store: Store) -> None:
    await store.ensure_customer(ACME)
    source = Source(new_id("src"), ACME, Carrier.TWILIO, b"\x00encrypted-credentials", utcnow())
    await store.create_source(source)

    assert await store.get_source(source.id) == source
    assert await store.get_source(new_id("src")) is None


# -- subscriptions -----------------------------------------------------------------------------


async def test_created_subscription_is_gettable_by_its_owner(store: Store) -> None:
    sub = await subscribe(store, events=("call.completed", "call.failed"))

    assert await store.get_subscription(ACME, sub.id) == sub


async def test_same_url_and_set_of_events_returns_the_original(store: Store) -> None:
    original = await subscribe(store, events=("call.failed", "call.completed"))

    again = await store.create_subscription(
        make_subscription(events=("call.completed", "call.failed", "call.completed"))
    )

    assert again.created is False
    assert again.subscription.id == original.id


async def test_different_events_make_a_new_subscription(store: Store) -> None:
    original = await subscribe(store, events=("call.completed",))

    other = await store.create_subscription(make_subscription(events=("call.completed", "call.failed")))

    assert other.created is True
    assert other.subscription.id != original.id


async def test_same_url_and_events_for_another_customer_is_a_new_subscription(store: Store) -> None:
    original = await subscribe(store, ACME)
    await store.ensure_customer(OTHER)

    theirs = await store.create_subscription(make_subscription(OTHER))

    assert theirs.created is True
    assert theirs.subscription.id != original.id


async def test_get_subscription_hides_another_customers_subscription(store: Store) -> None:
    sub = await subscribe(store, ACME)
    await store.ensure_customer(OTHER)

    assert await store.get_subscription(OTHER, sub.id) is None


async def test_another_customer_cannot_delete_a_subscription(store: Store) -> None:
    sub = await subscribe(store, ACME)
    await store.ensure_customer(OTHER)

    assert await store.delete_subscription(OTHER, sub.id) is False
    assert await store.get_subscription(ACME, sub.id) == sub


async def test_list_pages_walk_every_subscription_once_in_id_order(store: Store) -> None:
    ids = [(await subscribe(store, url=f"https://hooks.example.com/{n}")).id for n in range(5)]
    await subscribe(store, OTHER, url="https://hooks.example.com/0")

    seen: list[str] = []
    cursors: list[str | None] = []
    cursor: str | None = None
    while True:
        page = await store.list_subscriptions(ACME, PageRequest(2, cursor))
        seen += [s.id for s in page.items]
        cursors.append(page.next_cursor)
        cursor = page.next_cursor
        if cursor is None:
            break

    assert seen == sorted(ids)
    assert len(cursors) == 3
    assert cursors[-1] is None


async def test_last_page_exactly_full_has_no_next_cursor(store: Store) -> None:
    for n in range(4):
        await subscribe(store, url=f"https://hooks.example.com/{n}")

    first = await store.list_subscriptions(ACME, PageRequest(2))
    second = await store.list_subscriptions(ACME, PageRequest(2, first.next_cursor))

    assert first.next_cursor is not None
    assert len(second.items) == 2
    assert second.next_cursor is None


# Garbage, and valid base64 of text that is not an id ("hello").
@pytest.mark.parametrize("cursor", ["not a cursor!", "aGVsbG8"])
async def test_list_with_an_invalid_cursor_raises_value_error(store: Store, cursor: str) -> None:
    await subscribe(store)

    with pytest.raises(ValueError):
        await store.list_subscriptions(ACME, PageRequest(2, cursor))


async def test_delete_subscription_returns_true_then_false(store: Store) -> None:
    sub = await subscribe(store)

    assert await store.delete_subscription(ACME, sub.id) is True
    assert await store.delete_subscription(ACME, sub.id) is False


async def test_deleted_subscription_is_neither_gettable_nor_listed(store: Store) -> None:
    kept = await subscribe(store, url="https://hooks.example.com/kept")
    gone = await subscribe(store, url="https://hooks.example.com/gone")

    await store.delete_subscription(ACME, gone.id)

    assert await store.get_subscription(ACME, gone.id) is None
    page = await store.list_subscriptions(ACME, PageRequest(10))
    assert [s.id for s in page.items] == [kept.id]


async def test_recreating_after_delete_gives_a_new_subscription(store: Store) -> None:
    gone = await subscribe(store)
    await store.delete_subscription(ACME, gone.id)

    again = await store.create_subscription(make_subscription())

    assert again.created is True
    assert again.subscription.id != gone.id
    assert await store.get_subscription(ACME, again.subscription.id) is not None


# -- publish and fan-out -----------------------------------------------------------------------


async def test_publish_fans_out_to_each_matching_subscription_of_the_customer(store: Store) -> None:
    a = await subscribe(store, url="https://hooks.example.com/a", events=(COMPLETED,))
    b = await subscribe(store, url="https://hooks.example.com/b", events=(COMPLETED, "call.failed"))
    await subscribe(store, url="https://hooks.example.com/c", events=("call.ringing",))
    await subscribe(store, OTHER, url="https://hooks.example.com/a", events=(COMPLETED,))
    event = make_event()

    result = await store.publish(event)

    assert (result.created, result.deliveries, result.event.id) == (True, 2, event.id)
    jobs = await claim(store)
    assert {job.subscription_id for job in jobs} == {a.id, b.id}


async def test_delivery_ids_are_ulid_shaped_and_sort_by_their_events_time(store: Store) -> None:
    await subscribe(store, url="https://hooks.example.com/a")
    await subscribe(store, url="https://hooks.example.com/b")
    earlier_event = make_event()
    await asyncio.sleep(0.003)  # the next id's millisecond time is later
    later_event = make_event()
    await store.publish(later_event)  # published first, made last
    await store.publish(earlier_event)

    jobs = await claim(store)

    assert len(jobs) == 4
    for job in jobs:
        assert re.fullmatch(r"dlv_[0-9A-HJKMNP-TV-Z]{26}", job.delivery_id), job
        assert job.delivery_id[4:14] == job.event_id[4:14], job
    earlier = sorted(j.delivery_id for j in jobs if j.event_id == earlier_event.id)
    later = sorted(j.delivery_id for j in jobs if j.event_id == later_event.id)
    assert len(set(earlier + later)) == 4
    assert earlier[-1] < later[0]


async def test_concurrent_publishes_of_every_kind_each_get_their_own_fan_out(store: Store) -> None:
    """Publishes that may share one write batch (plain, idempotent, with a callback_url, for
    types nobody wants, for another customer) each fan out exactly as they would alone."""
    acme_a = await subscribe(store, url="https://hooks.example.com/a")
    acme_b = await subscribe(store, url="https://hooks.example.com/b")
    other = await subscribe(store, OTHER, url="https://hooks.example.com/o")
    await store.ensure_callback_secret(ACME, b"fake-ciphertext:callback")  # as the API does first
    plain = [make_event() for _ in range(30)]
    unwanted = [make_event(event_type="call.ringing") for _ in range(5)]
    others = [make_event(OTHER) for _ in range(10)]
    keyed = [make_event(idempotency_key="same") for _ in range(3)]
    with_callback = NewEvent(ACME, COMPLETED, {}, callback_url="https://app.example.com/cb")
    events = [*plain, *unwanted, *others, *keyed, with_callback]
    order = sorted(range(len(events)), key=lambda i: (i * 7919) % len(events))  # interleaved

    results = await asyncio.gather(*(store.publish(events[i]) for i in order))

    by_id = {events[i].id: result for i, result in zip(order, results, strict=True)}
    assert all(by_id[e.id].deliveries == 2 and by_id[e.id].created for e in plain)
    assert all(by_id[e.id].deliveries == 0 and by_id[e.id].created for e in unwanted)
    assert all(by_id[e.id].deliveries == 1 for e in others)
    assert by_id[with_callback.id].deliveries == 3
    keyed_results = [by_id[e.id] for e in keyed]
    assert sorted(r.created for r in keyed_results) == [False, False, True]
    original = next(r.event.id for r in keyed_results if r.created)
    assert {r.event.id for r in keyed_results} == {original}
    assert all(by_id[e.id].event.payload == orjson.dumps(e.envelope()) for e in plain + others)

    jobs = await claim(store, limit=1000)
    expected = {(e.id, s.id) for e in plain for s in (acme_a, acme_b)}
    expected |= {(e.id, other.id) for e in others}
    expected |= {(original, acme_a.id), (original, acme_b.id)}
    expected |= {(with_callback.id, acme_a.id), (with_callback.id, acme_b.id)}
    callback_jobs = [j for j in jobs if j.url == "https://app.example.com/cb"]
    assert len(callback_jobs) == 1 and callback_jobs[0].event_id == with_callback.id
    assert {(j.event_id, j.subscription_id) for j in jobs if j not in callback_jobs} == expected
    assert len(jobs) == len(expected) + 1


async def test_claimed_job_carries_what_the_worker_needs(store: Store) -> None:
    sub = await subscribe(store)
    event = make_event()
    await store.publish(event)

    job = await claim_one(store)

    assert job.event_id == event.id
    assert job.subscription_id == sub.id
    assert job.url == sub.url
    assert job.secret == sub.secret
    assert job.payload == orjson.dumps(event.envelope())
    assert job.attempt_no == 1


async def test_claimed_jobs_carry_their_events_type_and_trace_context(store: Store) -> None:
    """Plain publishes stored together, keyed ones alone, and one published without tracing."""
    await subscribe(store)
    parents = [f"00-{i:032x}-{i:016x}-01" for i in range(1, 5)]
    traced = [replace(make_event(), traceparent=p) for p in parents[:3]]
    keyed = replace(make_event(idempotency_key="k1"), traceparent=parents[3])
    untraced = make_event()
    await asyncio.gather(*(store.publish(e) for e in [*traced, keyed, untraced]))

    jobs = {job.event_id: job for job in await claim(store)}

    expected = {e.id: e.traceparent for e in [*traced, keyed, untraced]}
    assert {event_id: job.traceparent for event_id, job in jobs.items()} == expected
    assert {job.event_type for job in jobs.values()} == {COMPLETED}


async def test_publish_of_a_non_matching_type_creates_no_delivery(store: Store) -> None:
    await subscribe(store, events=(COMPLETED,))

    result = await store.publish(make_event(event_type="call.ringing"))

    assert (result.created, result.deliveries) == (True, 0)
    assert await claim(store) == []


async def test_publish_for_another_customer_reaches_none_of_ours(store: Store) -> None:
    await subscribe(store, ACME)

    result = await store.publish(make_event(OTHER))

    assert result.deliveries == 0
    assert await claim(store) == []


async def test_repeated_idempotency_key_returns_the_original_and_stores_nothing(store: Store) -> None:
    await subscribe(store)
    first = await store.publish(make_event(idempotency_key="k1"))
    await claim_one(store)

    repeat = await store.publish(make_event(idempotency_key="k1"))

    assert (repeat.created, repeat.deliveries) == (False, 0)
    assert repeat.event.id == first.event.id
    assert repeat.event.payload == first.event.payload
    # The original delivery is still claimed, so anything claimable now would be a new one.
    assert await claim(store) == []


async def test_same_idempotency_key_for_another_customer_is_independent(store: Store) -> None:
    await subscribe(store, OTHER)
    mine = await store.publish(make_event(ACME, idempotency_key="k1"))

    theirs = await store.publish(make_event(OTHER, idempotency_key="k1"))

    assert (theirs.created, theirs.deliveries) == (True, 1)
    assert theirs.event.id != mine.event.id


async def test_delayed_delivery_is_due_only_after_the_delay(store: Store) -> None:
    await subscribe(store)
    await store.publish(make_event(), delay_s=60)

    assert await claim(store) == []
    assert len(await claim(store, later(61))) == 1


# -- claiming and leases -----------------------------------------------------------------------


async def test_claim_respects_the_limit(store: Store) -> None:
    for n in range(3):
        await subscribe(store, url=f"https://hooks.example.com/{n}")
    await store.publish(make_event())

    first = await claim(store, limit=2)
    rest = await claim(store, limit=2)

    assert len(first) == 2
    assert len(rest) == 1
    assert {j.delivery_id for j in first}.isdisjoint({j.delivery_id for j in rest})


async def test_a_claim_lasts_while_its_worker_heartbeats_however_long(store: Store) -> None:
    """No lease runs out under a slow attempt: another worker an hour later does not take it."""
    await subscribe(store)
    await store.publish(make_event())
    start = utcnow()
    await store.register_worker("wkr_slow", start)
    await claim_one(store, start, worker="wkr_slow")

    an_hour_later = start + timedelta(hours=1)
    await store.worker_heartbeat("wkr_slow", an_hour_later - timedelta(seconds=1))
    assert await claim(store, an_hour_later) == []


async def test_a_dead_workers_claim_comes_back_first_with_the_next_attempt_no(store: Store) -> None:
    """Its due time is untouched: it goes out ahead of work that became due after it."""
    await subscribe(store)
    await store.publish(make_event())
    start = utcnow()
    first = await claim_one(store, start, worker=GHOST)
    await store.publish(make_event())

    again = await claim(store, start + timedelta(seconds=RECLAIM_EVERY_S), limit=1)

    assert [(j.delivery_id, j.attempt_no) for j in again] == [(first.delivery_id, 2)]


async def test_a_retired_workers_leftover_claims_come_back(store: Store) -> None:
    await subscribe(store)
    await store.publish(make_event())
    start = utcnow()
    await store.register_worker("wkr_gone", start)
    first = await claim_one(store, start, worker="wkr_gone")
    await store.retire_worker("wkr_gone")

    again = await claim_one(store, start + timedelta(seconds=RECLAIM_EVERY_S))

    assert (again.delivery_id, again.attempt_no) == (first.delivery_id, 2)


# -- recording attempts ------------------------------------------------------------------------


async def test_successful_delivery_is_never_claimed_again(store: Store) -> None:
    await subscribe(store)
    await store.publish(make_event())
    job = await claim_one(store)

    await store.record_attempts([outcome(job, succeeded=True)])

    assert await claim(store, later(86400 * 7)) == []


async def test_failed_attempt_with_a_retry_time_is_claimable_then_and_not_before(store: Store) -> None:
    """On a healthy subscription: the success reported after the failure leaves nothing held."""
    await subscribe(store)
    await store.publish(make_event())
    await store.publish(make_event())
    start = utcnow()
    job, other = await claim(store, start)
    retry_at = start + timedelta(seconds=300)

    await store.record_attempts(
        [outcome(job, succeeded=False, next_attempt_at=retry_at), outcome(other, succeeded=True)]
    )

    assert await claim(store, retry_at - timedelta(seconds=1)) == []
    retried = await claim_one(store, retry_at)
    assert (retried.delivery_id, retried.attempt_no) == (job.delivery_id, 2)


async def test_failed_attempt_without_a_retry_time_is_never_claimed_again(store: Store) -> None:
    await subscribe(store)
    await store.publish(make_event())
    job = await claim_one(store)

    await store.record_attempts([outcome(job, succeeded=False, next_attempt_at=None)])

    assert await claim(store, later(86400 * 7)) == []


async def test_stale_success_does_not_finish_a_reclaimed_delivery(store: Store) -> None:
    await subscribe(store)
    await store.publish(make_event())
    start = utcnow()
    stale = await claim_one(store, start, worker=GHOST)
    current = await claim_one(store, start + timedelta(seconds=RECLAIM_EVERY_S), worker="wkr_ghost2")

    await store.record_attempts([outcome(stale, succeeded=True)])

    # The second claimer died too, so the delivery comes back for a third attempt.
    third = await claim_one(store, start + timedelta(seconds=2 * RECLAIM_EVERY_S))
    assert (third.delivery_id, third.attempt_no) == (current.delivery_id, 3)


async def test_stale_retry_does_not_release_a_reclaimed_delivery_early(store: Store) -> None:
    await subscribe(store)
    await store.publish(make_event())
    start = utcnow()
    stale = await claim_one(store, start, worker=GHOST)
    current = await claim_one(store, start + timedelta(seconds=RECLAIM_EVERY_S))

    retry_at = start + timedelta(seconds=RECLAIM_EVERY_S + 1)
    await store.record_attempts([outcome(stale, succeeded=False, next_attempt_at=retry_at)])

    assert await claim(store, retry_at + timedelta(seconds=1)) == []
    await store.record_attempts([outcome(current, succeeded=True)])
    assert await claim(store, later(86400 * 7)) == []


async def test_one_record_call_of_many_mixed_outcomes_finishes_each_delivery_as_its_own(store: Store) -> None:
    """A worker reports a whole batch at once (more results than one statement takes, in the SQL
    stores): each delivery ends as its own outcome says, and a stale result changes nothing."""
    await subscribe(store)
    for _ in range(240):
        await store.publish(make_event())
    start = utcnow()
    jobs = await claim(store, start, limit=240)
    stale = jobs[-1]
    retry_at = start + timedelta(seconds=600)
    results = []
    for n, job in enumerate(jobs[:-1]):
        kind = n % 3  # delivered, to retry at retry_at, failed for good
        results.append(outcome(job, succeeded=kind == 0, next_attempt_at=retry_at if kind == 1 else None))
    results.append(replace(outcome(stale, succeeded=True), attempt_no=stale.attempt_no + 1))

    await store.record_attempts(results)

    details = [await store.get_delivery(ACME, job.delivery_id) for job in jobs]
    assert all(d is not None for d in details)
    statuses = [d.delivery.status for d in details if d is not None]
    expected = [
        (DeliveryStatus.DELIVERED, DeliveryStatus.PENDING, DeliveryStatus.FAILED)[n % 3] for n in range(239)
    ]
    assert statuses[:-1] == expected
    assert statuses[-1] is DeliveryStatus.IN_FLIGHT  # its claim was attempt 1; the result said 2
    for detail, result in zip(details, results, strict=True):
        assert detail is not None
        assert [(a.attempt_no, a.status_code) for a in detail.attempts] == [
            (result.attempt_no, result.status_code)
        ]
        if result.next_attempt_at is not None and detail.delivery.status is DeliveryStatus.PENDING:
            assert detail.delivery.next_attempt_at is not None
            assert abs((detail.delivery.next_attempt_at - retry_at).total_seconds()) < 0.01
    assert len(await claim(store, retry_at, limit=500)) == 80  # the stale one stays its live worker's


async def test_two_results_for_one_claim_in_one_call_finish_it_as_the_first_says(store: Store) -> None:
    """As if finished one by one: the first result stands and the attempts guard refuses the
    second (set-based finishes would otherwise pick either)."""
    await subscribe(store)
    await store.publish(make_event())
    job = await claim_one(store)

    await store.record_attempts(
        [outcome(job, succeeded=True), outcome(job, succeeded=False, next_attempt_at=later(60))]
    )

    detail = await store.get_delivery(ACME, job.delivery_id)
    assert detail is not None
    assert detail.delivery.status is DeliveryStatus.DELIVERED
    assert await claim(store, later(86400 * 7)) == []


# -- release and delete ------------------------------------------------------------------------


async def test_released_delivery_is_claimable_at_once_with_the_same_attempt_no(store: Store) -> None:
    await subscribe(store)
    await store.publish(make_event())
    job = await claim_one(store)

    await store.release_deliveries([(job.delivery_id, job.attempt_no)])

    again = await claim_one(store)
    assert (again.delivery_id, again.attempt_no) == (job.delivery_id, 1)


async def test_release_after_a_retry_keeps_the_retry_attempt_no(store: Store) -> None:
    await subscribe(store)
    await store.publish(make_event())
    start = utcnow()
    first = await claim_one(store, start)
    await store.record_attempts([outcome(first, succeeded=False, next_attempt_at=start)])
    probe_at = later(PROBE_AFTER_S + 1)  # the failure counted: the retry goes as the probe
    second = await claim_one(store, probe_at)

    await store.release_deliveries([(second.delivery_id, second.attempt_no)])

    again = await claim_one(store, probe_at)
    assert (again.delivery_id, again.attempt_no) == (first.delivery_id, 2)


async def test_a_stale_release_does_not_undo_a_newer_claim(store: Store) -> None:
    """Worker A is taken for dead, worker B claims the delivery again, then A shuts down and gives
    back its claim: B's claim stands, so the delivery is not sent a second time meanwhile."""
    await subscribe(store)
    await store.publish(make_event())
    start = utcnow()
    stale = await claim_one(store, start, worker=GHOST)
    current = await claim_one(store, start + timedelta(seconds=RECLAIM_EVERY_S))

    await store.release_deliveries([(stale.delivery_id, stale.attempt_no)])

    assert await claim(store, start + timedelta(seconds=2 * RECLAIM_EVERY_S)) == []
    detail = await store.get_delivery(ACME, current.delivery_id)
    assert detail is not None
    assert (detail.delivery.status, detail.delivery.attempts) == (DeliveryStatus.IN_FLIGHT, 2)
    await store.record_attempts([outcome(current, succeeded=True)])
    assert await claim(store, later(86400 * 7)) == []


async def test_delete_subscription_cancels_its_pending_deliveries(store: Store) -> None:
    gone = await subscribe(store, url="https://hooks.example.com/gone")
    kept = await subscribe(store, url="https://hooks.example.com/kept")
    await store.publish(make_event())

    await store.delete_subscription(ACME, gone.id)

    jobs = await claim(store, later(86400 * 7))
    assert [job.subscription_id for job in jobs] == [kept.id]


async def test_delivery_in_flight_at_delete_is_not_retried_to_the_deleted_subscription(store: Store) -> None:
    sub = await subscribe(store)
    await store.publish(make_event())
    start = utcnow()
    job = await claim_one(store, start)
    await store.delete_subscription(ACME, sub.id)

    # The attempt that was on the wire fails and asks for a retry; the endpoint is gone by now.
    await store.record_attempts([outcome(job, succeeded=False, next_attempt_at=start)])

    assert await claim(store, later(86400 * 7)) == []


async def test_delivery_claimed_at_delete_is_not_sent_when_its_dead_workers_claims_come_back(
    store: Store,
) -> None:
    sub = await subscribe(store)
    await store.publish(make_event())
    start = utcnow()
    await claim_one(store, start, worker=GHOST)

    # The worker holding the claim dies; the subscription is deleted meanwhile.
    await store.delete_subscription(ACME, sub.id)

    assert await claim(store, start + timedelta(seconds=RECLAIM_EVERY_S)) == []


# -- work listeners ----------------------------------------------------------------------------


async def test_work_listener_is_called_once_for_each_publish_that_made_deliveries(store: Store) -> None:
    calls: list[None] = []
    store.add_work_listener(lambda: calls.append(None))
    await subscribe(store, url="https://hooks.example.com/a")
    await subscribe(store, url="https://hooks.example.com/b")

    first = await store.publish(make_event())
    assert first.deliveries == 2
    assert calls == [None]  # once for the publish, not once per delivery

    await store.publish(make_event())
    assert calls == [None, None]


async def test_work_listener_is_not_called_for_a_publish_without_deliveries(store: Store) -> None:
    calls: list[None] = []
    store.add_work_listener(lambda: calls.append(None))
    await subscribe(store, events=(COMPLETED,))

    await store.publish(make_event(event_type="call.ringing"))

    assert calls == []
