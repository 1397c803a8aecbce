"""The Store contract for what the management API reads and changes, on every backend: customers,
PATCH and secret rotation, the delivery and event logs, retries and recovery, the callback secret,
the metrics' counts. The last test checks that this suite calls every operation of the protocol."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.contract.test_store_contract import (
    ACME,
    COMPLETED,
    OTHER,
    claim,
    claim_one,
    later,
    make_event,
    make_subscription,
    outcome,
    subscribe,
)
from webhookd.exceptions import Conflict
from webhookd.models import DeliveryStatus, NewEvent, SignatureScheme, utcnow
from webhookd.store.base import PageRequest, Store, SubscriptionUpdate

pytestmark = pytest.mark.anyio

FIRST_UTC = datetime.min.replace(tzinfo=UTC)
LAST_UTC = datetime.max.replace(tzinfo=UTC)


def close_to(moment: datetime | None, expected: datetime) -> bool:
    """Equal to within a millisecond: SQLite keeps times as float seconds."""
    return moment is not None and abs((moment - expected).total_seconds()) < 0.001


async def failed_delivery(store: Store, created_at: datetime | None = None) -> str:
    """Publish one event to the customer's subscription and fail its only attempt for good. The
    failure counts against the subscription: re-enabling it makes it healthy again, so that what
    the test publishes next goes out at once."""
    event = make_event() if created_at is None else dataclasses.replace(make_event(), created_at=created_at)
    await store.publish(event)
    job = await claim_one(store, later(1))
    await store.record_attempts([outcome(job, succeeded=False, next_attempt_at=None)])
    assert await store.enable_subscription(ACME, job.subscription_id) is not None
    return job.delivery_id


# -- customers ---------------------------------------------------------------------------------


async def test_get_customer_finds_an_ensured_customer_and_nothing_else(store: Store) -> None:
    ensured = await store.ensure_customer(ACME, "Acme Dental")

    assert await store.get_customer(ACME) == ensured
    assert await store.get_customer(OTHER) is None


# -- PATCH -------------------------------------------------------------------------------------


async def test_update_changes_url_events_and_description(store: Store) -> None:
    sub = await subscribe(store)

    updated = await store.update_subscription(
        ACME,
        sub.id,
        SubscriptionUpdate("https://hooks.example.com/new", ("call.failed", COMPLETED), "the new one"),
    )

    assert updated is not None
    assert (updated.url, set(updated.events), updated.description) == (
        "https://hooks.example.com/new",
        {"call.failed", COMPLETED},
        "the new one",
    )
    assert await store.get_subscription(ACME, sub.id) == updated
    await store.publish(make_event(event_type="call.failed"))
    assert [job.url for job in await claim(store)] == ["https://hooks.example.com/new"]


async def test_update_leaves_what_it_is_not_given_and_an_empty_description_clears(store: Store) -> None:
    sub = await subscribe(store)
    described = await store.update_subscription(ACME, sub.id, SubscriptionUpdate(description="kept"))
    assert described is not None and described.description == "kept"

    renamed = await store.update_subscription(ACME, sub.id, SubscriptionUpdate(url="https://h.example.com/x"))
    assert renamed is not None
    assert (renamed.url, renamed.events, renamed.description) == (
        "https://h.example.com/x",
        sub.events,
        "kept",
    )

    cleared = await store.update_subscription(ACME, sub.id, SubscriptionUpdate(description=""))
    assert cleared is not None and cleared.description is None


async def test_update_that_would_duplicate_another_subscription_is_a_conflict(store: Store) -> None:
    await subscribe(store, url="https://hooks.example.com/a")
    other = await subscribe(store, url="https://hooks.example.com/b")

    with pytest.raises(Conflict):
        await store.update_subscription(ACME, other.id, SubscriptionUpdate(url="https://hooks.example.com/a"))

    assert await store.get_subscription(ACME, other.id) == other


async def test_update_of_another_customers_or_a_deleted_subscription_finds_nothing(store: Store) -> None:
    sub = await subscribe(store)
    gone = await subscribe(store, url="https://hooks.example.com/gone")
    await store.delete_subscription(ACME, gone.id)
    change = SubscriptionUpdate(description="mine now")

    assert await store.update_subscription(OTHER, sub.id, change) is None
    assert await store.update_subscription(ACME, gone.id, change) is None
    assert await store.get_subscription(ACME, sub.id) == sub


# -- secret rotation ---------------------------------------------------------------------------


async def test_rotated_secret_signs_and_the_old_one_keeps_signing_until_the_grace_ends(store: Store) -> None:
    sub = await subscribe(store)
    until = later(3600)

    rotated = await store.rotate_subscription_secret(ACME, sub.id, b"fake-ciphertext:new", until)

    assert rotated is not None
    assert (rotated.secret, rotated.previous_secret) == (b"fake-ciphertext:new", sub.secret)
    assert close_to(rotated.previous_secret_until, until)
    await store.publish(make_event())
    job = await claim_one(store)
    assert (job.secret, job.previous_secret) == (b"fake-ciphertext:new", sub.secret)


async def test_rotation_to_v1a_keeps_the_public_key_and_the_old_v1_secret_signing(store: Store) -> None:
    sub = await subscribe(store)

    rotated = await store.rotate_subscription_secret(
        ACME, sub.id, b"fake-ciphertext:whsk", later(3600), SignatureScheme.V1A, "whpk_public"
    )

    assert rotated is not None
    assert (rotated.signature_scheme, rotated.public_key) == (SignatureScheme.V1A, "whpk_public")
    assert await store.get_subscription(ACME, sub.id) == rotated
    back = await store.rotate_subscription_secret(ACME, sub.id, b"fake-ciphertext:whsec", later(3600))
    assert back is not None and (back.signature_scheme, back.public_key) == (SignatureScheme.V1, None)
    assert back.previous_secret == b"fake-ciphertext:whsk"


async def test_headers_are_stored_replaced_by_a_patch_and_cleared(store: Store) -> None:
    await store.ensure_customer(ACME)
    made = dataclasses.replace(make_subscription(ACME, "https://hooks.example.com/h"), headers=b"sealed:1")
    sub = (await store.create_subscription(made)).subscription
    assert sub.headers == b"sealed:1"
    await store.publish(make_event())
    assert (await claim_one(store)).headers == b"sealed:1"

    replaced = await store.update_subscription(ACME, sub.id, SubscriptionUpdate(headers=b"sealed:2"))
    kept = await store.update_subscription(ACME, sub.id, SubscriptionUpdate(description="d"))
    cleared = await store.update_subscription(ACME, sub.id, SubscriptionUpdate(headers=b""))

    assert replaced is not None and replaced.headers == b"sealed:2"
    assert kept is not None and kept.headers == b"sealed:2"
    assert cleared is not None and cleared.headers is None


async def test_rotating_another_customers_subscription_finds_nothing(store: Store) -> None:
    sub = await subscribe(store)

    assert await store.rotate_subscription_secret(OTHER, sub.id, b"theirs", later(60)) is None
    assert await store.get_subscription(ACME, sub.id) == sub


# -- the delivery log, retry and recovery ---------------------------------------------------------


async def test_delivery_log_is_newest_first_in_pages_and_filters_by_status(store: Store) -> None:
    sub = await subscribe(store)
    events = [
        dataclasses.replace(make_event(), created_at=utcnow() - timedelta(seconds=10 - n)) for n in range(5)
    ]
    for event in events:
        await store.publish(event)
    (job,) = await claim(store, later(1), limit=1)
    await store.record_attempts([outcome(job, succeeded=True)])

    seen, cursor = [], None
    while True:
        page = await store.list_deliveries(ACME, sub.id, PageRequest(2, cursor))
        seen += [d.event_id for d in page.items]
        if (cursor := page.next_cursor) is None:
            break
    delivered = await store.list_deliveries(ACME, sub.id, PageRequest(10), DeliveryStatus.DELIVERED)

    assert seen == [e.id for e in reversed(events)]
    assert [d.id for d in delivered.items] == [job.delivery_id]
    assert (await store.list_deliveries(OTHER, sub.id, PageRequest(10))).items == []


async def test_retry_sends_a_failed_delivery_again_now_with_one_more_attempt(store: Store) -> None:
    await subscribe(store)
    delivery_id = await failed_delivery(store)

    retried = await store.retry_delivery(ACME, delivery_id)

    assert retried is not None and retried.status is DeliveryStatus.PENDING
    again = await claim_one(store, later(1))
    assert (again.delivery_id, again.attempt_no) == (delivery_id, 2)


async def test_retry_refuses_a_delivery_in_flight_or_of_a_deleted_subscription(store: Store) -> None:
    sub = await subscribe(store)
    await store.publish(make_event())
    job = await claim_one(store)

    with pytest.raises(Conflict):
        await store.retry_delivery(ACME, job.delivery_id)
    await store.record_attempts([outcome(job, succeeded=False, next_attempt_at=None)])
    await store.delete_subscription(ACME, sub.id)
    with pytest.raises(Conflict):
        await store.retry_delivery(ACME, job.delivery_id)


async def test_retry_of_another_customers_delivery_finds_nothing(store: Store) -> None:
    await subscribe(store)
    delivery_id = await failed_delivery(store)

    assert await store.retry_delivery(OTHER, delivery_id) is None
    assert await claim(store, later(3600)) == []


async def test_failed_delivery_ids_are_those_created_in_the_window_oldest_first(store: Store) -> None:
    sub = await subscribe(store)
    hour_ago = utcnow() - timedelta(hours=1)
    old = await failed_delivery(store, created_at=hour_ago)
    new = await failed_delivery(store)
    await store.publish(make_event())  # pending, not failed

    around_old = await store.failed_delivery_ids(
        ACME, sub.id, hour_ago - timedelta(seconds=1), hour_ago + timedelta(seconds=1), 10
    )
    since_old = await store.failed_delivery_ids(ACME, sub.id, hour_ago, later(60), 10)
    first_only = await store.failed_delivery_ids(ACME, sub.id, hour_ago, later(60), 1)
    theirs = await store.failed_delivery_ids(OTHER, sub.id, hour_ago, later(60), 10)

    assert (around_old, since_old, first_only, theirs) == ([old], [old, new], [old], [])


async def test_failed_delivery_ids_take_the_first_and_last_times_every_store_holds(store: Store) -> None:
    """Years 1 and 9999 (UTC), the edges of what the API accepts for recover."""
    sub = await subscribe(store)
    delivery_id = await failed_delivery(store)

    assert await store.failed_delivery_ids(ACME, sub.id, FIRST_UTC, LAST_UTC, 10) == [delivery_id]
    assert await store.failed_delivery_ids(ACME, sub.id, FIRST_UTC, later(-60), 10) == []
    assert await store.failed_delivery_ids(ACME, sub.id, later(60), LAST_UTC, 10) == []


async def test_requeue_puts_back_only_deliveries_that_are_still_failed(store: Store) -> None:
    sub = await subscribe(store)
    failed = await failed_delivery(store)
    await store.publish(make_event())
    (pending,) = (await store.list_deliveries(ACME, sub.id, PageRequest(10), DeliveryStatus.PENDING)).items

    assert await store.requeue_deliveries([failed, pending.id]) == 1
    assert await store.requeue_deliveries([failed]) == 0  # pending again by now
    jobs = await claim(store, later(1))
    assert {(job.delivery_id, job.attempt_no) for job in jobs} == {(failed, 2), (pending.id, 1)}


# -- the event log -----------------------------------------------------------------------------


async def test_event_log_is_newest_first_in_pages_and_filters_by_type(store: Store) -> None:
    await store.ensure_customer(ACME)
    types = [COMPLETED, "call.failed", COMPLETED, "call.ringing", COMPLETED]
    events = [
        dataclasses.replace(make_event(event_type=t), created_at=utcnow() - timedelta(seconds=10 - n))
        for n, t in enumerate(types)
    ]
    for event in events:
        await store.publish(event)
    await store.publish(make_event(OTHER))

    seen, cursor = [], None
    while True:
        page = await store.list_events(ACME, PageRequest(2, cursor), COMPLETED)
        seen += [e.id for e in page.items]
        if (cursor := page.next_cursor) is None:
            break
    everything = await store.list_events(ACME, PageRequest(10))

    assert seen == [e.id for e in reversed(events) if e.type == COMPLETED]
    assert [e.id for e in everything.items] == [e.id for e in reversed(events)]
    assert (await store.list_events(ACME, PageRequest(10), "call.no_answer")).items == []


async def test_get_event_gives_the_stored_event_to_its_customer_or_an_admin_only(store: Store) -> None:
    event = NewEvent(ACME, COMPLETED, {"call_id": "c1"}, "k1", callback_url="https://app.example.com/cb")
    await store.ensure_customer(ACME)
    await store.ensure_callback_secret(ACME, b"fake-ciphertext:callback")
    published = await store.publish(event)

    found = await store.get_event(ACME, event.id)

    assert found is not None
    assert (found.id, found.type, found.idempotency_key, found.callback_url) == (
        event.id,
        COMPLETED,
        "k1",
        "https://app.example.com/cb",
    )
    assert found.payload == published.event.payload
    assert await store.get_event(OTHER, event.id) is None
    assert await store.get_event(None, event.id) == found  # an admin's read: whoever owns it
    assert await store.get_event(None, "evt_00000000000000000000000000") is None


# -- the callback secret -----------------------------------------------------------------------


async def test_callback_secret_is_none_until_made_and_then_kept(store: Store) -> None:
    await store.ensure_customer(ACME)
    assert await store.get_callback_secret(ACME) is None

    made = await store.ensure_callback_secret(ACME, b"fake-ciphertext:first")
    again = await store.ensure_callback_secret(ACME, b"fake-ciphertext:second")

    assert made.secret == again.secret == b"fake-ciphertext:first"
    assert await store.get_callback_secret(ACME) == made


async def test_rotating_the_callback_secret_keeps_the_old_one_until_the_grace_ends(store: Store) -> None:
    await store.ensure_customer(ACME)
    await store.ensure_callback_secret(ACME, b"fake-ciphertext:first")
    until = later(3600)

    rotated = await store.rotate_callback_secret(ACME, b"fake-ciphertext:second", until)

    assert (rotated.secret, rotated.previous) == (b"fake-ciphertext:second", b"fake-ciphertext:first")
    assert close_to(rotated.previous_until, until)
    assert await store.get_callback_secret(ACME) == rotated


async def test_rotating_a_callback_secret_never_made_keeps_no_previous_one(store: Store) -> None:
    await store.ensure_customer(ACME)

    rotated = await store.rotate_callback_secret(ACME, b"fake-ciphertext:first", later(3600))

    assert (rotated.secret, rotated.previous, rotated.previous_until) == (
        b"fake-ciphertext:first",
        None,
        None,
    )


# -- metrics and health ------------------------------------------------------------------------


async def test_outbox_stats_count_deliveries_by_status_and_subscriptions_by_state(store: Store) -> None:
    await subscribe(store, url="https://hooks.example.com/a")
    await subscribe(store, url="https://hooks.example.com/b")
    await store.publish(make_event())
    await store.publish(make_event())
    first, second = await claim(store, limit=2)
    await store.record_attempts([outcome(first, succeeded=True), outcome(second, succeeded=False)])

    stats = await store.outbox_stats(later(30))

    assert stats.deliveries_by_status == {
        "pending": 1,
        "in_flight": 0,
        "held": 1,  # the failure counted against the second subscription
        "parked": 0,
        "delivered": 1,
        "failed": 1,
        "canceled": 0,
    }
    assert 29 < stats.oldest_due_age_s < 60
    assert stats.subscriptions_by_state == {"active": 1, "failing": 1, "disabled": 0}


async def test_top_backlogs_rank_subscriptions_by_unfinished_deliveries(store: Store) -> None:
    busy = await subscribe(store, url="https://hooks.example.com/busy")
    await store.publish(make_event())
    paced = await subscribe(store, url="https://hooks.example.com/paced")
    await store.update_subscription(ACME, paced.id, SubscriptionUpdate(rate_limit_per_second=3, ordered=True))
    for _ in range(3):
        await store.publish(make_event(), delay_s=60)
    await store.ensure_customer(OTHER)
    quiet = await subscribe(store, OTHER, url="https://hooks.example.com/quiet")
    (job,) = await claim(store, later(1), limit=1)

    top = await store.top_backlogs(10)

    assert job.subscription_id == busy.id
    assert [(b.subscription_id, b.pending, b.in_flight) for b in top] == [(busy.id, 3, 1), (paced.id, 3, 0)]
    assert (top[1].customer_id, top[1].url, top[1].rate_limit_per_second, top[1].ordered) == (
        ACME,
        "https://hooks.example.com/paced",
        3,
        True,
    )
    assert top[1].oldest_due_at is not None and top[1].oldest_due_at > later(50)
    assert quiet.id not in {b.subscription_id for b in top}
    assert [b.subscription_id for b in await store.top_backlogs(1)] == [busy.id]


async def test_an_open_store_answers_a_ping(store: Store) -> None:
    await store.ping()


# -- coverage of the protocol ------------------------------------------------------------------


def test_the_contract_suite_calls_every_operation_of_the_store_protocol() -> None:
    """So an operation added to ``Store`` gets its contract tests, on every backend, with it."""
    operations = [
        name for name, _ in inspect.getmembers(Store, inspect.isfunction) if not name.startswith("_")
    ]
    here = Path(__file__).parent
    suite = "".join(path.read_text() for path in [here / "conftest.py", *here.glob("test_store_*.py")])

    assert len(operations) > 20
    assert [name for name in operations if f".{name}(" not in suite] == []
