"""Retention never prunes an idempotency key younger than the 7-day dedupe window (every store)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.contract.test_store_contract import claim, make_event, outcome, subscribe
from webhookd.delivery.retention import prune_once
from webhookd.models import utcnow
from webhookd.store.base import Store

pytestmark = pytest.mark.anyio


async def test_short_retention_prunes_deliveries_but_keeps_dedupe_keys_seven_days(store: Store) -> None:
    await subscribe(store)
    await store.publish(make_event(idempotency_key="twilio:AC1:CA1:completed:3"))
    (job,) = await claim(store)
    await store.record_attempts([outcome(job, succeeded=True)])

    in_two_days = utcnow() + timedelta(days=2)
    assert await prune_once(store, timedelta(days=1), clock=lambda: in_two_days) == 2  # delivery + attempt
    assert not (await store.publish(make_event(idempotency_key="twilio:AC1:CA1:completed:3"))).created

    in_eight_days = utcnow() + timedelta(days=8)
    assert await prune_once(store, timedelta(days=1), clock=lambda: in_eight_days) == 1  # the event
    assert (await store.publish(make_event(idempotency_key="twilio:AC1:CA1:completed:3"))).created
