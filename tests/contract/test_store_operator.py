"""The Store contract for the operator's dashboard, on every backend: links that open the operator's
view, signed-out sessions, customers with their counts, troubled subscriptions across customers,
revoked keys, and the pruning of expired links and sessions."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta

import pytest

from tests.contract.test_store_circuit import failure, gone
from tests.contract.test_store_contract import ACME, OTHER, claim, make_event, subscribe
from webhookd.models import ApiKey, DashboardAccess, Scope, new_id, utcnow
from webhookd.store.base import PageRequest, Store

pytestmark = pytest.mark.anyio


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def _key(store: Store, customer_id: str) -> ApiKey:
    await store.ensure_customer(customer_id)
    key = ApiKey(
        new_id("key"), customer_id, _hash(new_id("k")), frozenset({Scope.MANAGE_WEBHOOKS}), None, utcnow()
    )
    await store.create_api_key(key)
    return key


# -- links and sessions ------------------------------------------------------------------------


async def test_a_link_keeps_what_it_opens_the_operators_view_or_a_customers_dashboard(store: Store) -> None:
    await store.ensure_customer(ACME)
    now = utcnow()
    await store.create_dashboard_link(
        _hash("op"), DashboardAccess.operator(), now, now + timedelta(minutes=15)
    )
    await store.create_dashboard_link(
        _hash("acme"), DashboardAccess.of_customer(ACME), now, now + timedelta(minutes=15)
    )

    operator = await store.redeem_dashboard_link(_hash("op"), now)
    customer = await store.redeem_dashboard_link(_hash("acme"), now)

    assert operator == DashboardAccess.operator() and operator.customer_id is None and operator.is_operator
    assert customer == DashboardAccess.of_customer(ACME) and not customer.is_operator
    assert await store.redeem_dashboard_link(_hash("op"), now) is None


async def test_a_signed_out_session_is_remembered_and_no_other(store: Store) -> None:
    ends = utcnow() + timedelta(hours=8)
    await store.end_dashboard_session("session-1", ends)
    await store.end_dashboard_session("session-1", ends)  # signing out twice is no error

    assert await store.dashboard_session_ended("session-1")
    assert not await store.dashboard_session_ended("session-2")


async def test_prune_deletes_links_and_signed_out_sessions_expired_before_the_events_cutoff(
    store: Store,
) -> None:
    await store.ensure_customer(ACME)
    now = utcnow()
    old, fresh = now - timedelta(days=8), now + timedelta(minutes=15)
    for name, expires_at in (("old", old), ("used", old), ("fresh", fresh)):
        await store.create_dashboard_link(_hash(name), DashboardAccess.of_customer(ACME), old, expires_at)
    assert await store.redeem_dashboard_link(_hash("used"), old - timedelta(minutes=1)) is not None
    await store.end_dashboard_session("old-session", old)
    await store.end_dashboard_session("live-session", fresh)
    cutoff = now - timedelta(days=7)

    gone_rows = await store.prune(deliveries_before=cutoff, events_before=cutoff, limit=100)

    assert gone_rows == 3  # two old links (one used, one not) and the old session
    assert await store.prune(deliveries_before=cutoff, events_before=cutoff, limit=100) == 0
    assert not await store.dashboard_session_ended("old-session")
    assert await store.dashboard_session_ended("live-session")
    assert await store.redeem_dashboard_link(_hash("fresh"), now) == DashboardAccess.of_customer(ACME)


# -- customers and troubled subscriptions ------------------------------------------------------


async def _troubled(store: Store) -> tuple[str, str, str]:
    """ACME with a healthy subscription; OTHER with a failing one and a disabled one (a 410)."""
    healthy = await subscribe(store, ACME)
    failing = await subscribe(store, OTHER, "https://hooks.example.com/failing")
    disabled = await subscribe(store, OTHER, "https://hooks.example.com/gone")
    await store.publish(make_event(OTHER))
    jobs = {job.subscription_id: job for job in await claim(store)}
    await store.record_attempts([failure(jobs[failing.id]), gone(jobs[disabled.id])])
    return healthy.id, failing.id, disabled.id


async def test_troubled_subscriptions_are_every_customers_disabled_and_failing_ones_by_id(
    store: Store,
) -> None:
    _, failing, disabled = await _troubled(store)

    listed = await store.troubled_subscriptions(PageRequest(100))
    first = await store.troubled_subscriptions(PageRequest(1))
    assert first.next_cursor is not None
    second = await store.troubled_subscriptions(PageRequest(1, first.next_cursor))

    assert [s.id for s in listed.items] == sorted([failing, disabled]) and listed.next_cursor is None
    states = {s.id: (s.is_active, s.failure_count > 0, s.customer_id) for s in listed.items}
    assert states == {failing: (True, True, OTHER), disabled: (False, True, OTHER)}
    assert [s.id for s in (*first.items, *second.items)] == sorted([failing, disabled])
    assert second.next_cursor is None
    with pytest.raises(ValueError):
        await store.troubled_subscriptions(PageRequest(1, "not-a-cursor"))


async def test_a_re_enabled_or_deleted_subscription_is_no_longer_troubled(store: Store) -> None:
    _, failing, disabled = await _troubled(store)

    await store.enable_subscription(OTHER, disabled)
    await store.delete_subscription(OTHER, failing)

    assert (await store.troubled_subscriptions(PageRequest(100))).items == []


async def test_customers_are_listed_by_id_with_their_subscription_and_key_counts(store: Store) -> None:
    await _troubled(store)
    await _key(store, ACME)
    revoked = await _key(store, ACME)
    await store.revoke_api_key(ACME, revoked.id, utcnow())
    await store.ensure_customer("cus_empty", "Empty Co")

    listed = await store.list_customers(PageRequest(100))
    first = await store.list_customers(PageRequest(2))
    assert first.next_cursor is not None
    rest = await store.list_customers(PageRequest(2, first.next_cursor))

    counts = {
        c.customer.id: (c.customer.name, c.subscriptions, c.failing, c.disabled, c.keys) for c in listed.items
    }
    assert list(counts) == sorted([ACME, OTHER, "cus_empty"]) and listed.next_cursor is None
    assert counts == {
        ACME: (None, 1, 0, 0, 1),
        OTHER: (None, 2, 1, 1, 0),
        "cus_empty": ("Empty Co", 0, 0, 0, 0),
    }
    assert [c.customer.id for c in (*first.items, *rest.items)] == list(counts)
    with pytest.raises(ValueError):
        await store.list_customers(PageRequest(1, "no spaces allowed"))


# -- keys --------------------------------------------------------------------------------------


async def test_a_revoked_key_comes_back_marked_revoked_at_its_first_revocation(store: Store) -> None:
    key, kept = await _key(store, ACME), await _key(store, ACME)
    at = utcnow().replace(microsecond=0)

    assert await store.revoke_api_key(OTHER, key.id, at) is None  # another customer's key: not found
    assert (await store.get_api_key(key.key_hash)) == key
    revoked = await store.revoke_api_key(ACME, key.id, at)
    again = await store.revoke_api_key(None, key.id, at + timedelta(hours=1))  # anyone's, as an admin

    assert revoked is not None and revoked.revoked_at == at
    assert again == revoked and await store.get_api_key(key.key_hash) == revoked
    assert await store.revoke_api_key(None, "key_missing", at) is None
    listed = await store.list_api_keys(ACME)
    assert [(k.id, k.revoked_at) for k in listed] == sorted([(key.id, at), (kept.id, None)])
    assert await store.list_api_keys(OTHER) == []


async def test_a_keys_last_use_only_moves_forward(store: Store) -> None:
    key, other = await _key(store, ACME), await _key(store, ACME)
    at = utcnow().replace(microsecond=0)

    await store.mark_api_key_used(key.id, at)
    await store.mark_api_key_used(key.id, at - timedelta(minutes=1))  # a late write of an older use
    first = await store.get_api_key(key.key_hash)
    await store.mark_api_key_used(key.id, at + timedelta(minutes=1))

    assert first is not None and first.last_used_at == at
    assert (await store.get_api_key(key.key_hash)) == dataclasses.replace(
        key, last_used_at=at + timedelta(minutes=1)
    )
    assert (await store.get_api_key(other.key_hash)) == other and other.last_used_at is None
