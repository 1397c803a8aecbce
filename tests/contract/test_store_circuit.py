"""The Store contract for per-subscription health and retention, on every backend."""

from __future__ import annotations

import collections
import dataclasses

import pytest

from tests.contract.conftest import DISABLE_AFTER, PROBE_AFTER_S, RETRY_AFTER_CAP_S
from tests.contract.test_store_contract import claim, later, make_event, outcome, subscribe
from webhookd.models import AttemptResult, DeliveryJob, Disabled, DisabledReason
from webhookd.store.base import PageRequest, Store

pytestmark = pytest.mark.anyio


def failure(job: DeliveryJob, *, status: int = 500, retry_after_s: float | None = None) -> AttemptResult:
    """A failed attempt as the worker reports it: the store decides what it does to the subscription."""
    failed = outcome(job, succeeded=False, next_attempt_at=later(1))
    return dataclasses.replace(
        failed, status_code=status, error=f"HTTP {status}", retry_after_s=retry_after_s
    )


def gone(job: DeliveryJob) -> AttemptResult:
    """A 410 Gone: the endpoint says it is not coming back."""
    return failure(job, status=410)


async def _sub_with_events(store: Store, count: int) -> str:
    sub = await subscribe(store)
    for _ in range(count):
        await store.publish(make_event())
    return sub.id


async def _state(store: Store, sub_id: str) -> tuple[int, bool, DisabledReason | None, dict[str, int]]:
    """The subscription's failure count, whether it is active, why it was disabled, and how many of
    its deliveries are in each status."""
    sub = await store.get_subscription("cus_acme", sub_id)
    assert sub is not None
    page = await store.list_deliveries("cus_acme", sub_id, PageRequest(limit=100))
    statuses = collections.Counter(str(d.status) for d in page.items)
    return sub.failure_count, sub.is_active, sub.disabled_reason, dict(statuses)


async def test_a_counted_failure_holds_the_rest_and_allows_one_probe_at_a_time(store: Store) -> None:
    sub_id = await _sub_with_events(store, 3)
    (first,) = await claim(store, limit=1)
    await store.record_attempts([failure(first)])

    assert await claim(store, later(PROBE_AFTER_S / 2)) == []  # held until the probe time, attempts unspent
    probes = await claim(store, later(PROBE_AFTER_S + 1))
    assert len(probes) == 1 and probes[0].subscription_id == sub_id
    assert await claim(store, later(PROBE_AFTER_S + 2)) == []  # one probe in flight, no burst
    assert await _state(store, sub_id) == (1, True, None, {"held": 2, "in_flight": 1})


async def test_retry_after_puts_the_next_probe_off(store: Store) -> None:
    sub_id = await _sub_with_events(store, 2)
    (first,) = await claim(store, limit=1)
    await store.record_attempts([failure(first, status=503, retry_after_s=PROBE_AFTER_S * 3)])

    assert await claim(store, later(PROBE_AFTER_S * 2)) == []
    assert [job.subscription_id for job in await claim(store, later(PROBE_AFTER_S * 3 + 1))] == [sub_id]
    assert PROBE_AFTER_S * 3 < RETRY_AFTER_CAP_S  # honoured whole, not cut to the cap


async def test_a_failure_of_an_attempt_already_in_flight_does_not_count(store: Store) -> None:
    sub_id = await _sub_with_events(store, 2)
    first, second = await claim(store)
    await store.record_attempts([failure(first)])
    await store.record_attempts([failure(second)])  # claimed before the first failed

    assert (await _state(store, sub_id))[0] == 1


async def test_failures_claimed_together_count_once_in_one_batch(store: Store) -> None:
    """A blip: every attempt in flight fails at once. They were all claimed before any failure was
    counted, so they count as one, however many there are."""
    sub_id = await _sub_with_events(store, DISABLE_AFTER + 1)
    jobs = await claim(store)
    await store.record_attempts([failure(job) for job in jobs])

    assert await _state(store, sub_id) == (1, True, None, {"held": DISABLE_AFTER + 1})


async def test_straight_failures_disable_and_the_disable_is_returned(store: Store) -> None:
    sub_id = await _sub_with_events(store, 2)
    (job,) = await claim(store, limit=1)
    for n in range(1, DISABLE_AFTER):
        assert await store.record_attempts([failure(job)]) == []
        (job,) = await claim(store, later(n * (PROBE_AFTER_S + 1)))  # the probe

    disabled = await store.record_attempts([failure(job)])

    assert disabled == [Disabled("cus_acme", sub_id, DisabledReason.CONSECUTIVE_FAILURES)]
    assert await _state(store, sub_id) == (
        DISABLE_AFTER,
        False,
        DisabledReason.CONSECUTIVE_FAILURES,
        {"parked": 2},
    )


async def test_a_successful_probe_resets_the_count_and_releases_what_was_held(store: Store) -> None:
    sub_id = await _sub_with_events(store, 3)
    (first,) = await claim(store, limit=1)
    await store.record_attempts([failure(first)])
    (probe,) = await claim(store, later(PROBE_AFTER_S + 1))
    await store.record_attempts([outcome(probe, succeeded=True)])

    assert await _state(store, sub_id) == (0, True, None, {"pending": 2, "delivered": 1})
    assert len(await claim(store, later(PROBE_AFTER_S + 1))) == 2  # the two held ones, at once


async def test_a_failure_then_a_success_in_one_batch_leaves_the_subscription_healthy(store: Store) -> None:
    """Outcomes apply in the order reported: the success comes last, so nothing stays held, and
    the failed delivery's retry waits as pending."""
    sub_id = await _sub_with_events(store, 3)
    failed, succeeded = await claim(store, limit=2)

    disabled = await store.record_attempts([failure(failed), outcome(succeeded, succeeded=True)])

    assert disabled == []
    assert await _state(store, sub_id) == (0, True, None, {"pending": 2, "delivered": 1})


async def test_a_success_then_a_failure_in_one_batch_leaves_the_subscription_failing(store: Store) -> None:
    sub_id = await _sub_with_events(store, 3)
    succeeded, failed = await claim(store, limit=2)

    disabled = await store.record_attempts([outcome(succeeded, succeeded=True), failure(failed)])

    assert disabled == []
    assert await _state(store, sub_id) == (1, True, None, {"held": 2, "delivered": 1})


async def test_a_failure_then_a_gone_in_one_batch_disables_as_endpoint_gone(store: Store) -> None:
    """The first failure counts; the 410 disables at once, although it was claimed before that
    failure was counted, and its reason is the one stored and returned."""
    sub_id = await _sub_with_events(store, 3)
    failed, went = await claim(store, limit=2)

    disabled = await store.record_attempts([failure(failed), gone(went)])

    assert disabled == [Disabled("cus_acme", sub_id, DisabledReason.ENDPOINT_GONE)]
    assert await _state(store, sub_id) == (2, False, DisabledReason.ENDPOINT_GONE, {"parked": 3})


async def test_gone_disables_even_when_the_generation_moved(store: Store) -> None:
    sub_id = await _sub_with_events(store, 2)
    first, second = await claim(store)
    await store.record_attempts([failure(first)])
    disabled = await store.record_attempts([gone(second)])

    assert disabled == [Disabled("cus_acme", sub_id, DisabledReason.ENDPOINT_GONE)]
    assert await _state(store, sub_id) == (2, False, DisabledReason.ENDPOINT_GONE, {"parked": 2})


async def test_the_disable_returned_is_the_one_that_disabled(store: Store) -> None:
    """One batch that could disable twice: the failure that would be the last straight one was
    claimed before a failure was counted, so it does not count; the 410 Gone does, and its reason
    is the one stored and returned."""
    sub_id = await _sub_with_events(store, 4)
    job, stale = await claim(store, limit=2)
    for n in range(1, DISABLE_AFTER):
        await store.record_attempts([failure(job)])
        (job,) = await claim(store, later(n * (PROBE_AFTER_S + 1)))  # the probe
    assert (await _state(store, sub_id))[0] == DISABLE_AFTER - 1

    disabled = await store.record_attempts([failure(stale), gone(job)])

    assert disabled == [Disabled("cus_acme", sub_id, DisabledReason.ENDPOINT_GONE)]
    assert await _state(store, sub_id) == (DISABLE_AFTER, False, DisabledReason.ENDPOINT_GONE, {"parked": 4})


async def test_a_success_on_a_disabled_subscription_does_not_revive_it(store: Store) -> None:
    sub_id = await _sub_with_events(store, 3)
    went, late = await claim(store, limit=2)

    await store.record_attempts([gone(went)])
    await store.record_attempts([outcome(late, succeeded=True)])

    expected = {"parked": 2, "delivered": 1}
    assert await _state(store, sub_id) == (1, False, DisabledReason.ENDPOINT_GONE, expected)


async def test_disable_parks_deliveries_and_enable_resumes_them(store: Store) -> None:
    sub_id = await _sub_with_events(store, 3)
    (first,) = await claim(store, limit=1)
    await store.record_attempts([gone(first)])

    sub = await store.get_subscription("cus_acme", sub_id)
    assert sub is not None and not sub.is_active
    assert sub.disabled_reason is DisabledReason.ENDPOINT_GONE and sub.disabled_at is not None
    assert await claim(store, later(3600)) == []  # a disabled subscription gets no attempts
    assert (await store.publish(make_event())).deliveries == 0

    enabled = await store.enable_subscription("cus_acme", sub_id)
    assert enabled is not None and enabled.is_active and enabled.failure_count == 0
    assert enabled.disabled_reason is None
    assert len(await claim(store, later(1))) == 3  # all three parked deliveries resume


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


async def test_deliveries_held_behind_a_failing_endpoint_age_in_the_oldest_due(store: Store) -> None:
    """Held deliveries are waiting work: the scrape's oldest due age counts them, and the top backlogs
    show them apart from the pending ones."""
    sub_id = await _sub_with_events(store, 3)
    (first,) = await claim(store, limit=1)
    await store.record_attempts([dataclasses.replace(failure(first), next_attempt_at=later(100))])

    stats = await store.outbox_stats(later(30))

    assert (stats.deliveries_by_status["held"], stats.deliveries_by_status["pending"]) == (3, 0)
    assert 29 < stats.oldest_due_age_s < 60  # the failed one, held too, waits for a probe at 100 s
    (backlog,) = await store.top_backlogs(10)
    assert (backlog.subscription_id, backlog.held, backlog.failure_count) == (sub_id, 3, 1)
