"""``publish_many``: a batch of events in one transaction, on every backend."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from tests.contract.test_store_contract import ACME, COMPLETED, OTHER, claim, make_event, subscribe
from webhookd.models import NewEvent
from webhookd.store.base import PageRequest, Store

pytestmark = pytest.mark.anyio

RINGING = "call.ringing"


async def stored_ids(store: Store, customer_id: str = ACME) -> set[str]:
    return {event.id for event in (await store.list_events(customer_id, PageRequest(100))).items}


async def test_publish_many_stores_every_event_in_order_with_its_deliveries(store: Store) -> None:
    await subscribe(store, events=(COMPLETED,))
    await subscribe(store, url="https://hooks.example.com/b", events=(COMPLETED, RINGING))
    events = [
        make_event(),
        make_event(event_type=RINGING),
        make_event(idempotency_key="k1"),
        make_event(OTHER),
        replace(make_event(), ordering_key="call-1"),
    ]

    results = await store.publish_many(events)

    assert [r.event.id for r in results] == [e.id for e in events]
    assert [(r.created, r.deliveries) for r in results] == [
        (True, 2),
        (True, 1),
        (True, 2),
        (True, 0),
        (True, 2),
    ]
    assert await stored_ids(store) == {e.id for e in events if e.customer_id == ACME}
    assert len(await claim(store)) == 7


async def test_a_key_repeated_within_the_batch_is_a_repeat_of_its_first(store: Store) -> None:
    await subscribe(store)
    first, plain, again = make_event(idempotency_key="k1"), make_event(), make_event(idempotency_key="k1")
    theirs = make_event(OTHER, idempotency_key="k1")  # another customer's key is its own

    results = await store.publish_many([first, plain, again, theirs])

    assert [r.event.id for r in results] == [first.id, plain.id, first.id, theirs.id]
    assert [(r.created, r.deliveries) for r in results] == [(True, 1), (True, 1), (False, 0), (True, 0)]
    assert await stored_ids(store) == {first.id, plain.id}
    assert len(await claim(store)) == 2


async def test_a_repeated_batch_answers_the_originals_and_stores_nothing(store: Store) -> None:
    await subscribe(store)
    originals = await store.publish_many([make_event(idempotency_key=f"k{i}") for i in range(3)])
    assert len(await claim(store)) == 3

    repeats = await store.publish_many([make_event(idempotency_key=f"k{i}") for i in range(3)])

    assert [(r.event.id, r.created, r.deliveries) for r in repeats] == [
        (r.event.id, False, 0) for r in originals
    ]
    assert len(await stored_ids(store)) == 3
    # The originals' deliveries are claimed: anything claimable now would be a new one.
    assert await claim(store) == []


async def test_a_batch_that_fails_part_way_stores_none_of_it(store: Store) -> None:
    """The batch's first event (a callback_url's, stored one by one ahead of the others on both
    backends) goes in; then the database itself refuses the last, whose id another event has: the
    batch's transaction takes the first back with it."""
    await subscribe(store)
    taken = await store.publish(make_event())
    with_callback = replace(make_event(), callback_url="https://calls.example.com/cb")
    clash = replace(make_event(), id=taken.event.id)

    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await store.publish_many([with_callback, make_event(idempotency_key="k1"), clash])

    assert await stored_ids(store) == {taken.event.id}
    assert len(await claim(store)) == 1  # the first publish's delivery alone
    again = await store.publish(make_event(idempotency_key="k1"))
    assert again.created


async def test_a_failing_batch_does_not_take_down_the_writes_committed_beside_it(store: Store) -> None:
    await subscribe(store)
    taken = await store.publish(make_event())
    clash = replace(make_event(), id=taken.event.id)
    beside = [make_event() for _ in range(3)]

    outcomes = await asyncio.gather(
        store.publish_many([make_event(), clash]),
        *(store.publish(event) for event in beside),
        store.publish_many(beside_batch := [make_event(), make_event(event_type=RINGING)]),
        return_exceptions=True,
    )

    assert isinstance(outcomes[0], Exception)
    assert not any(isinstance(outcome, BaseException) for outcome in outcomes[1:])
    expected = {taken.event.id, *(e.id for e in beside), *(e.id for e in beside_batch)}
    assert await stored_ids(store) == expected


def _new(customer_id: str, n: int) -> list[NewEvent]:
    return [make_event(customer_id) for _ in range(n)]


async def test_a_batch_of_several_hundred_plain_events_is_stored_whole(store: Store) -> None:
    """More rows than one multi-row insert holds, for two customers."""
    await subscribe(store)
    events = _new(ACME, 250) + _new(OTHER, 250)

    results = await store.publish_many(events)

    assert [r.event.id for r in results] == [e.id for e in events]
    assert sum(r.deliveries for r in results) == 250
    page = await store.list_events(ACME, PageRequest(300))
    assert len(page.items) == 250


async def test_the_first_of_a_repeated_key_is_the_original_whatever_the_others_carry(store: Store) -> None:
    """A callback_url's event is stored apart from plain ones (on PostgreSQL, ahead of them): the
    batch's order, not the store's, says which of two events with one key is the original."""
    await subscribe(store)
    plain = make_event(idempotency_key="k1")
    with_callback = replace(make_event(idempotency_key="k1"), callback_url="https://calls.example.com/cb")

    results = await store.publish_many([plain, with_callback])

    assert [(r.event.id, r.created) for r in results] == [(plain.id, True), (plain.id, False)]
    assert await stored_ids(store) == {plain.id}
