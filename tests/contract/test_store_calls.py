"""The Store contract for calls, on every backend: a customer's calls newest first and paged, and one
call's timeline of callbacks, the events they produced and where those went."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract.test_store_contract import ACME, OTHER, subscribe
from webhookd.models import Carrier, NewEvent
from webhookd.store.base import CallbackReceipt, Decide, PageRequest, Store

pytestmark = pytest.mark.anyio

COMPLETED = "call.completed"


def moving(customer_id: str, event_type: str | None) -> Decide:
    """A decide that counts callbacks in the state, and publishes ``event_type`` (if any) keyed by
    the count, so that each callback that moves the call makes its own event."""

    def decide(state: dict[str, Any] | None) -> tuple[dict[str, Any], NewEvent | None]:
        seen = (state or {}).get("seen", 0) + 1
        if event_type is None:
            return {"seen": seen}, None
        return {"seen": seen}, NewEvent(customer_id, event_type, {"seen": seen}, idempotency_key=f"e{seen}")

    return decide


async def callback(
    store: Store,
    call_id: str,
    key: str,
    *,
    customer_id: str = ACME,
    status: str = "completed",
    event_type: str | None = COMPLETED,
) -> None:
    receipt = CallbackReceipt(customer_id, Carrier.TWILIO.value, call_id, key, status)
    outcome = await store.record_callback(receipt, moving(customer_id, event_type))
    assert not outcome.duplicate


async def test_calls_come_newest_activity_first_with_their_counts(store: Store) -> None:
    await store.ensure_customer(ACME)
    await callback(store, "CA1", "k1")
    await callback(store, "CA2", "k2")
    await callback(store, "CA1", "k3", event_type=None)  # CA1 moves last, but produces no event

    page = await store.list_calls(ACME, PageRequest(limit=10))

    assert [(c.ref, c.callback_count, c.event_count) for c in page.items] == [
        ("twilio:CA1", 2, 1),
        ("twilio:CA2", 1, 1),
    ]
    assert page.items[0].state == {"seen": 2}
    assert page.items[0].updated_at > page.items[1].updated_at
    assert page.next_cursor is None


async def test_calls_page_by_cursor_and_by_offset_alike(store: Store) -> None:
    await store.ensure_customer(ACME)
    for n in range(5):
        await callback(store, f"CA{n}", f"k{n}", event_type=None)
    newest_first = [f"twilio:CA{n}" for n in reversed(range(5))]

    seen, cursor = [], None
    while True:
        page = await store.list_calls(ACME, PageRequest(limit=2, cursor=cursor))
        seen += [c.ref for c in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    offsets = [
        c.ref
        for n in range(3)
        for c in (await store.list_calls(ACME, PageRequest(limit=2, offset=2 * n))).items
    ]
    first = await store.list_calls(ACME, PageRequest(limit=2))
    cursor_wins = await store.list_calls(ACME, PageRequest(limit=2, cursor=first.next_cursor, offset=4))

    assert seen == offsets == newest_first
    assert [c.ref for c in cursor_wins.items] == newest_first[2:4]


async def test_a_calls_cursor_the_store_did_not_make_is_refused(store: Store) -> None:
    for cursor in ("nonsense", "12.5-nowhere:CA1", "12.5-twilio:", "evt_1"):
        with pytest.raises(ValueError):
            await store.list_calls(ACME, PageRequest(limit=2, cursor=cursor))


async def test_each_customer_sees_only_its_calls(store: Store) -> None:
    await store.ensure_customer(ACME)
    await store.ensure_customer(OTHER)
    await callback(store, "CA1", "k1")
    # The same carrier call id and callback key, another customer's: two callbacks, one event.
    await callback(store, "CA1", "k1", customer_id=OTHER)
    await callback(store, "CA1", "k2", customer_id=OTHER, event_type=None)
    await callback(store, "CA2", "k3", customer_id=OTHER)

    mine = await store.list_calls(ACME, PageRequest(limit=10))
    ours = await store.get_call(ACME, Carrier.TWILIO, "CA1")
    theirs = await store.get_call(OTHER, Carrier.TWILIO, "CA1")

    assert [(c.ref, c.callback_count, c.event_count) for c in mine.items] == [("twilio:CA1", 1, 1)]
    assert ours is not None and theirs is not None
    assert (len(ours.callbacks), len(ours.events), ours.call.state) == (1, 1, {"seen": 1})
    assert (len(theirs.callbacks), len(theirs.events), theirs.call.state) == (2, 1, {"seen": 2})
    assert {e.customer_id for e in ours.events} == {ACME}
    assert {e.customer_id for e in theirs.events} == {OTHER}
    assert await store.get_call(ACME, Carrier.TWILIO, "CA2") is None
    assert await store.get_call(ACME, Carrier.TELNYX, "CA1") is None
    assert (await store.list_calls("cus_nobody", PageRequest(limit=10))).items == []


async def test_a_timeline_shows_callbacks_their_events_and_a_late_callback_without_one(store: Store) -> None:
    sub = await subscribe(store, ACME)
    await callback(store, "CA1", "k1", status="ringing")
    await callback(store, "CA1", "k2", status="completed")
    await callback(store, "CA1", "k3", status="ringing", event_type=None)  # late: recorded, not delivered
    await callback(store, "CA2", "k4")

    timeline = await store.get_call(ACME, Carrier.TWILIO, "CA1")

    assert timeline is not None
    assert [(c.carrier, c.status_raw) for c in timeline.callbacks] == [
        (Carrier.TWILIO, "ringing"),
        (Carrier.TWILIO, "completed"),
        (Carrier.TWILIO, "ringing"),
    ]
    times = [c.received_at for c in timeline.callbacks]
    assert times == sorted(times)
    first, second, late = timeline.callbacks
    assert late.event_id is None and first.event_id is not None and second.event_id is not None
    assert [e.id for e in timeline.events] == [first.event_id, second.event_id]
    assert {e.type for e in timeline.events} == {COMPLETED}
    assert (timeline.call.callback_count, timeline.call.event_count) == (3, 2)
    for event in timeline.events:
        (delivery,) = timeline.deliveries[event.id]
        assert (delivery.delivery.subscription_id, delivery.url) == (sub.id, sub.url)
        assert delivery.delivery.event_id == event.id


async def test_event_deliveries_are_read_for_their_owner_only(store: Store) -> None:
    sub = await subscribe(store, ACME)
    await subscribe(store, ACME, url="https://hooks.example.com/b")
    await subscribe(store, OTHER)
    mine = await store.publish(NewEvent(ACME, COMPLETED, {}))
    quiet = await store.publish(NewEvent(ACME, "call.ringing", {}))  # no subscription wants it
    theirs = await store.publish(NewEvent(OTHER, COMPLETED, {}))

    found = await store.event_deliveries(ACME, [mine.event.id, quiet.event.id, theirs.event.id])

    assert set(found) == {mine.event.id}
    assert sorted(d.url for d in found[mine.event.id]) == [sub.url, "https://hooks.example.com/b"]
    assert all(d.delivery.customer_id == ACME for d in found[mine.event.id])
    assert await store.event_deliveries(ACME, []) == {}
