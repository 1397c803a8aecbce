"""The Store contract for per-subscription health and retention, on every backend."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from tests.contract.test_store_contract import claim, later, make_event, outcome, subscribe
from webhookd.models import AttemptResult, CircuitChange, DeliveryJob, DisabledReason
from webhookd.store.base import Store

pytestmark = pytest.mark.anyio


def failure(
    job: DeliveryJob,
    probe_at: datetime,
    *,
    disable: DisabledReason | None = None,
    force: bool = False,
) -> AttemptResult:
    """A failed attempt carrying the circuit change the worker computes for it."""
    change = CircuitChange(
        job.subscription_id, job.health_generation, job.failure_count + 1, probe_at, disable, force
    )
    return dataclasses.replace(outcome(job, succeeded=False, next_attempt_at=later(1)), circuit=change)


async def _sub_with_events(store: Store, count: int) -> str:
    sub = await subscribe(store)
    for _ in range(count):
        await store.publish(make_event())
    return sub.id


async def test_a_counted_failure_holds_the_rest_and_allows_one_probe_at_a_time(store: Store) -> None:
    sub_id = await _sub_with_events(store, 3)
    (first,) = await claim(store, limit=1)
    await store.record_attempts([failure(first, probe_at=later(10))])

    assert await claim(store, later(5)) == []  # held until the probe time, attempts unspent
    probes = await claim(store, later(11))
    assert len(probes) == 1 and probes[0].subscription_id == sub_id
    assert await claim(store, later(12)) == []  # one probe in flight, no burst
    sub = await store.get_subscription("cus_acme", sub_id)
    assert sub is not None and sub.failure_count == 1


async def test_a_failure_of_an_attempt_already_in_flight_does_not_count(store: Store) -> None:
    sub_id = await _sub_with_events(store, 2)
    first, second = await claim(store)
    await store.record_attempts([failure(first, probe_at=later(10))])
    await store.record_attempts([failure(second, probe_at=later(10))])  # claimed before the first failed

    sub = await store.get_subscription("cus_acme", sub_id)
    assert sub is not None and sub.failure_count == 1


async def test_a_successful_probe_resets_the_count_and_releases_what_was_held(store: Store) -> None:
    sub_id = await _sub_with_events(store, 3)
    (first,) = await claim(store, limit=1)
    await store.record_attempts([failure(first, probe_at=later(10))])
    (probe,) = await claim(store, later(11))
    await store.record_attempts([outcome(probe, succeeded=True)])

    sub = await store.get_subscription("cus_acme", sub_id)
    assert sub is not None and sub.failure_count == 0
    assert len(await claim(store, later(11))) == 2  # the two held ones, at once


async def test_disable_parks_deliveries_and_enable_resumes_them(store: Store) -> None:
    sub_id = await _sub_with_events(store, 3)
    (first,) = await claim(store, limit=1)
    disabled = await store.record_attempts(
        [failure(first, probe_at=later(10), disable=DisabledReason.CONSECUTIVE_FAILURES)]
    )

    assert [(c.subscription_id, c.disable) for c in disabled] == [
        (sub_id, DisabledReason.CONSECUTIVE_FAILURES)
    ]
    sub = await store.get_subscription("cus_acme", sub_id)
    assert sub is not None and not sub.is_active
    assert sub.disabled_reason is DisabledReason.CONSECUTIVE_FAILURES and sub.disabled_at is not None
    assert await claim(store, later(3600)) == []  # a disabled subscription gets no attempts
    assert (await store.publish(make_event())).deliveries == 0

    enabled = await store.enable_subscription("cus_acme", sub_id)
    assert enabled is not None and enabled.is_active and enabled.failure_count == 0
    assert enabled.disabled_reason is None
    assert len(await claim(store, later(1))) == 3  # all three parked deliveries resume


async def test_gone_disables_even_when_the_generation_moved(store: Store) -> None:
    sub_id = await _sub_with_events(store, 2)
    first, second = await claim(store)
    await store.record_attempts([failure(first, probe_at=later(10))])
    await store.record_attempts(
        [failure(second, probe_at=later(0), disable=DisabledReason.ENDPOINT_GONE, force=True)]
    )

    sub = await store.get_subscription("cus_acme", sub_id)
    assert sub is not None and not sub.is_active and sub.disabled_reason is DisabledReason.ENDPOINT_GONE


async def test_the_change_returned_for_a_disable_is_the_one_that_disabled(store: Store) -> None:
    """One batch with two disabling failures: the consecutive-failures one was claimed before a
    failure was counted, so it does not count; the 410 Gone does, and is the reason stored."""
    sub_id = await _sub_with_events(store, 3)
    first, stale, gone = await claim(store)
    await store.record_attempts([failure(first, probe_at=later(10))])

    disabled = await store.record_attempts(
        [
            failure(stale, probe_at=later(10), disable=DisabledReason.CONSECUTIVE_FAILURES),
            failure(gone, probe_at=later(0), disable=DisabledReason.ENDPOINT_GONE, force=True),
        ]
    )

    assert [(c.subscription_id, c.disable) for c in disabled] == [(sub_id, DisabledReason.ENDPOINT_GONE)]
    sub = await store.get_subscription("cus_acme", sub_id)
    assert sub is not None and sub.disabled_reason is DisabledReason.ENDPOINT_GONE


async def test_enable_of_another_customers_subscription_finds_nothing(store: Store) -> None:
    sub_id = await _sub_with_events(store, 0)
    assert await store.enable_subscription("cus_other", sub_id) is None


async def test_prune_removes_old_finished_deliveries_and_their_events(store: Store) -> None:
    await subscribe(store)
    await store.publish(make_event(idempotency_key="k1"))
    (job,) = await claim(store)
    await store.record_attempts([outcome(job, succeeded=True)])

    a_minute_ago = later(-60)
    assert await store.prune(deliveries_before=a_minute_ago, events_before=a_minute_ago, limit=10) == 0
    gone = await store.prune(deliveries_before=later(1), events_before=later(1), limit=10)

    assert gone >= 3  # the delivery, its attempt and the event
    assert await store.prune(deliveries_before=later(1), events_before=later(1), limit=10) == 0
    again = await store.publish(make_event(idempotency_key="k1"))
    assert again.created  # the event and its idempotency key are gone


async def test_prune_keeps_unfinished_deliveries_and_their_events(store: Store) -> None:
    await subscribe(store)
    first = await store.publish(make_event(idempotency_key="pending"))

    assert await store.prune(deliveries_before=later(3600), events_before=later(3600), limit=10) == 0
    assert len(await claim(store)) == 1
    repeat = await store.publish(make_event(idempotency_key="pending"))
    assert not repeat.created and repeat.event.id == first.event.id


async def test_prune_keeps_events_newer_than_their_cutoff(store: Store) -> None:
    await subscribe(store)
    await store.publish(make_event(idempotency_key="recent"))
    (job,) = await claim(store)
    await store.record_attempts([outcome(job, succeeded=True)])

    await store.prune(deliveries_before=later(1), events_before=later(-60), limit=10)
    assert not (await store.publish(make_event(idempotency_key="recent"))).created


async def test_a_delivery_released_after_its_subscription_was_deleted_is_not_sent(store: Store) -> None:
    sub_id = await _sub_with_events(store, 1)
    (job,) = await claim(store)
    assert await store.delete_subscription("cus_acme", sub_id)
    await store.release_deliveries([(job.delivery_id, job.attempt_no)])
    assert await claim(store, later(3600)) == []
