"""The Store contract for carrier callbacks: dedupe, call state and publishing in one step."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract.test_store_contract import claim, later, subscribe
from webhookd.models import NewEvent
from webhookd.store.base import CallbackReceipt, Decide, Store

pytestmark = pytest.mark.anyio


def receipt(key: str, call_id: str = "CA1") -> CallbackReceipt:
    return CallbackReceipt("cus_acme", "twilio", call_id, key, "completed")


def counting(emit: bool) -> tuple[Decide, list[dict[str, Any] | None]]:
    """A decide that counts the calls it saw, and publishes an event when ``emit``."""
    seen: list[dict[str, Any] | None] = []

    def decide(state: dict[str, Any] | None) -> tuple[dict[str, Any], NewEvent | None]:
        seen.append(state)
        count = (state or {}).get("count", 0) + 1
        event = NewEvent("cus_acme", "call.completed", {"count": count}) if emit else None
        return {"count": count}, event

    return decide, seen


async def test_a_new_callback_publishes_what_decide_returns(store: Store) -> None:
    await subscribe(store)
    decide, seen = counting(emit=True)
    outcome = await store.record_callback(receipt("k1"), decide)

    assert not outcome.duplicate and outcome.published is not None and outcome.published.created
    assert seen == [None]  # a new call has no state
    assert len(await claim(store)) == 1


async def test_a_repeated_callback_stores_nothing_and_does_not_decide(store: Store) -> None:
    await subscribe(store)
    decide, seen = counting(emit=True)
    await store.record_callback(receipt("k1"), decide)
    again = await store.record_callback(receipt("k1"), decide)

    assert again.duplicate and again.published is None
    assert len(seen) == 1
    assert len(await claim(store)) == 1


async def test_the_call_state_carries_from_callback_to_callback(store: Store) -> None:
    decide, seen = counting(emit=False)
    for key in ("k1", "k2", "k3"):
        outcome = await store.record_callback(receipt(key), decide)
        assert not outcome.duplicate and outcome.published is None  # recorded, nothing published
    await store.record_callback(receipt("k4", call_id="CA2"), decide)

    assert seen == [None, {"count": 1}, {"count": 2}, None]  # one state per call


async def test_dedupe_keys_go_only_with_pruning(store: Store) -> None:
    decide, _ = counting(emit=False)
    await store.record_callback(receipt("k1"), decide)
    await store.prune(deliveries_before=later(-60), events_before=later(-60), limit=10)
    assert (await store.record_callback(receipt("k1"), decide)).duplicate
    await store.prune(deliveries_before=later(1), events_before=later(1), limit=10)
    assert not (await store.record_callback(receipt("k1"), decide)).duplicate
