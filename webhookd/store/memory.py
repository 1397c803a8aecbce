"""In-memory store for unit tests: the same contract as SQLite, nothing durable."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import orjson

from webhookd.exceptions import Conflict, StoreError
from webhookd.models import (
    ApiKey,
    Attempt,
    AttemptResult,
    CallbackSecret,
    CircuitChange,
    Customer,
    Delivery,
    DeliveryJob,
    DeliveryStatus,
    Event,
    NewEvent,
    PublishResult,
    Source,
    Subscription,
    SubscriptionKind,
    new_id,
    utcnow,
)
from webhookd.store.base import (
    CallbackOutcome,
    CallbackReceipt,
    Decide,
    DeliveryDetail,
    OutboxStats,
    Page,
    PageRequest,
    Store,
    SubscriptionCreate,
    SubscriptionUpdate,
    WorkListener,
    decode_cursor,
    decode_log_cursor,
    encode_cursor,
    encode_log_cursor,
    events_key,
)

LogItem = TypeVar("LogItem", Delivery, Event)


@dataclass(slots=True)
class _Health:
    failure_count: int = 0
    generation: int = 0
    probe_at: datetime | None = None
    probe_delivery_id: str | None = None
    probe_lease_until: datetime | None = None


@dataclass(slots=True)
class _DeliveryRow:
    id: str
    event_id: str
    subscription_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    customer_id: str = ""
    lease_until: datetime | None = None
    claimed_generation: int = 0
    created_at: datetime = dataclasses.field(default_factory=utcnow)
    updated_at: datetime = dataclasses.field(default_factory=utcnow)
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None

    def view(self) -> Delivery:
        return Delivery(
            self.id,
            self.event_id,
            self.subscription_id,
            self.customer_id,
            self.status,
            self.attempts,
            self.next_attempt_at,
            self.created_at,
            self.updated_at,
            self.last_status,
            self.last_error,
            self.delivered_at,
        )


class MemoryStore:
    """Holds everything in dicts. Single event loop, so no locking is needed."""

    def __init__(self) -> None:
        self.customers: dict[str, Customer] = {}
        self.api_keys: dict[str, ApiKey] = {}
        self.sources: dict[str, Source] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.events: dict[str, Event] = {}
        self.deliveries: dict[str, _DeliveryRow] = {}
        self.attempts: list[AttemptResult] = []
        self._idempotency: dict[tuple[str, str], str] = {}
        self._health: dict[str, _Health] = {}
        self._deleted: dict[str, Subscription] = {}
        self._callback_secrets: dict[str, CallbackSecret] = {}
        self.calls: dict[tuple[str, str, str], bytes] = {}
        self.callbacks: dict[tuple[str, str], datetime] = {}
        self._listeners: list[WorkListener] = []
        self._open = False

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def ping(self) -> None:
        if not self._open:
            raise StoreError("the store is not open")

    def add_work_listener(self, listener: WorkListener) -> None:
        self._listeners.append(listener)

    def _notify_work(self) -> None:
        for listener in self._listeners:
            listener()

    async def ensure_customer(self, customer_id: str, name: str | None = None) -> Customer:
        existing = self.customers.get(customer_id)
        if existing is None:
            existing = Customer(customer_id, name, utcnow())
        elif name is not None:
            existing = dataclasses.replace(existing, name=name)
        self.customers[customer_id] = existing
        return existing

    async def create_api_key(self, key: ApiKey) -> None:
        self.api_keys[key.key_hash] = key

    async def get_api_key(self, key_hash: str) -> ApiKey | None:
        return self.api_keys.get(key_hash)

    async def create_source(self, source: Source) -> None:
        self.sources[source.id] = source

    async def get_source(self, source_id: str) -> Source | None:
        return self.sources.get(source_id)

    async def create_subscription(self, subscription: Subscription) -> SubscriptionCreate:
        key = events_key(subscription.events)
        for existing in self.subscriptions.values():
            same_owner = existing.customer_id == subscription.customer_id
            if same_owner and existing.url == subscription.url and events_key(existing.events) == key:
                return SubscriptionCreate(existing, created=False)
        stored = dataclasses.replace(subscription, events=tuple(key.split(",")))
        self.subscriptions[stored.id] = stored
        return SubscriptionCreate(stored, created=True)

    async def get_subscription(self, customer_id: str, subscription_id: str) -> Subscription | None:
        found = self.subscriptions.get(subscription_id)
        if found is None or found.customer_id != customer_id or found.kind is not SubscriptionKind.WEBHOOK:
            return None
        return dataclasses.replace(found, failure_count=self._health_of(found.id).failure_count)

    def _health_of(self, subscription_id: str) -> _Health:
        return self._health.setdefault(subscription_id, _Health())

    async def outbox_stats(self, now: datetime) -> OutboxStats:
        counts = {status.value: 0 for status in DeliveryStatus}
        for row in self.deliveries.values():
            counts[row.status.value] += 1
        due = [
            r.next_attempt_at
            for r in self.deliveries.values()
            if r.status is DeliveryStatus.PENDING and r.next_attempt_at <= now
        ]
        age = max(0.0, (now - min(due)).total_seconds()) if due else 0.0
        states = {"active": 0, "failing": 0, "disabled": 0}
        for sub in self.subscriptions.values():
            if sub.kind is SubscriptionKind.WEBHOOK:
                failing = self._health_of(sub.id).failure_count > 0
                states["disabled" if not sub.is_active else "failing" if failing else "active"] += 1
        return OutboxStats(counts, age, states)

    async def get_customer(self, customer_id: str) -> Customer | None:
        return self.customers.get(customer_id)

    async def list_subscriptions(self, customer_id: str, page: PageRequest) -> Page[Subscription]:
        after = decode_cursor(page.cursor) if page.cursor else ""
        mine = sorted(
            s.id
            for s in self.subscriptions.values()
            if s.customer_id == customer_id and s.kind is SubscriptionKind.WEBHOOK and s.id > after
        )
        mine = mine[0 if page.cursor else page.offset :]
        items = [self.subscriptions[i] for i in mine[: page.limit]]
        return Page(items, encode_cursor(items[-1].id) if len(mine) > page.limit else None)

    async def update_subscription(
        self, customer_id: str, subscription_id: str, update: SubscriptionUpdate
    ) -> Subscription | None:
        sub = await self.get_subscription(customer_id, subscription_id)
        if sub is None:
            return None
        url = update.url if update.url is not None else sub.url
        events = tuple(sorted(set(update.events))) if update.events is not None else sub.events
        for other in self.subscriptions.values():
            same = other.customer_id == customer_id and other.url == url and other.events == events
            if same and other.id != sub.id:
                raise Conflict("another subscription already has this url and set of events")
        description = sub.description if update.description is None else (update.description or None)
        self.subscriptions[sub.id] = dataclasses.replace(
            self.subscriptions[sub.id], url=url, events=events, description=description
        )
        return await self.get_subscription(customer_id, subscription_id)

    async def rotate_subscription_secret(
        self, customer_id: str, subscription_id: str, secret: bytes, previous_until: datetime
    ) -> Subscription | None:
        sub = await self.get_subscription(customer_id, subscription_id)
        if sub is None:
            return None
        self.subscriptions[sub.id] = dataclasses.replace(
            self.subscriptions[sub.id],
            secret=secret,
            previous_secret=sub.secret,
            previous_secret_until=previous_until,
        )
        return await self.get_subscription(customer_id, subscription_id)

    async def delete_subscription(self, customer_id: str, subscription_id: str) -> bool:
        if await self.get_subscription(customer_id, subscription_id) is None:
            return False
        self._deleted[subscription_id] = self.subscriptions.pop(subscription_id)
        waiting = {DeliveryStatus.PENDING, DeliveryStatus.HELD, DeliveryStatus.PARKED}
        self._move(subscription_id, waiting, DeliveryStatus.CANCELED)
        return True

    async def publish(self, event: NewEvent, *, delay_s: float = 0.0) -> PublishResult:
        if event.idempotency_key is not None:
            original = self._idempotency.get((event.customer_id, event.idempotency_key))
            if original is not None:
                return PublishResult(self.events[original], created=False, deliveries=0)
            self._idempotency[(event.customer_id, event.idempotency_key)] = event.id
        stored = Event(
            event.id,
            event.customer_id,
            event.type,
            event.idempotency_key,
            orjson.dumps(event.envelope()),
            event.created_at,
            event.callback_url,
        )
        self.events[stored.id] = stored
        targets = [
            s
            for s in self.subscriptions.values()
            if s.customer_id == event.customer_id and s.is_active and self._wants(s, event)
        ]
        if event.callback_url is not None:
            callback = self._callback_subscription(event.customer_id, event.callback_url)
            targets += [callback] if callback.is_active else []
        due = event.created_at + timedelta(seconds=delay_s)
        for sub in targets:
            row = _DeliveryRow(
                f"dlv_{stored.id[4:14]}{secrets.token_hex(8).upper()}",  # as the SQL stores make them
                stored.id,
                sub.id,
                DeliveryStatus.PENDING,
                0,
                due,
                customer_id=sub.customer_id,
                created_at=event.created_at,
            )
            row.status = self._waiting(row)
            self.deliveries[row.id] = row
        if targets:
            self._notify_work()
        return PublishResult(stored, created=True, deliveries=len(targets))

    @staticmethod
    def _wants(sub: Subscription, event: NewEvent) -> bool:
        if event.only_subscription_id is not None:
            return sub.id == event.only_subscription_id
        return event.type in sub.events

    def _callback_subscription(self, customer_id: str, url: str) -> Subscription:
        for sub in self.subscriptions.values():
            if sub.customer_id == customer_id and sub.url == url and sub.kind is SubscriptionKind.CALLBACK:
                return sub
        sub = Subscription(
            new_id("sub"), customer_id, url, (), None, b"", True, utcnow(), kind=SubscriptionKind.CALLBACK
        )
        self.subscriptions[sub.id] = sub
        return sub

    async def claim_deliveries(self, *, limit: int, lease_s: float, now: datetime) -> list[DeliveryJob]:
        self._expire_leases(now)
        lease = now + timedelta(seconds=lease_s)
        due = sorted(
            (
                r
                for r in self.deliveries.values()
                if r.status is DeliveryStatus.PENDING and r.next_attempt_at <= now
            ),
            key=lambda r: r.next_attempt_at,
        )[:limit]
        claimed = [self._claim(row, lease, now) for row in due]
        for sub_id in self._due_probes(now)[: limit - len(claimed)]:
            held = sorted(
                (
                    r
                    for r in self.deliveries.values()
                    if r.subscription_id == sub_id and r.status is DeliveryStatus.HELD
                ),
                key=lambda r: r.next_attempt_at,
            )
            if held:
                health = self._health_of(sub_id)
                health.probe_delivery_id, health.probe_lease_until = held[0].id, lease
                claimed.append(self._claim(held[0], lease, now))
        return claimed

    def _expire_leases(self, now: datetime) -> None:
        for row in self.deliveries.values():
            lease = row.lease_until
            if row.status is DeliveryStatus.IN_FLIGHT and lease is not None and lease <= now:
                row.status, row.next_attempt_at, row.lease_until = self._waiting(row), lease, None
                row.updated_at = now

    def _waiting(self, row: _DeliveryRow) -> DeliveryStatus:
        """Where a delivery waits for its next attempt, given its subscription's state."""
        sub = self.subscriptions.get(row.subscription_id)
        if sub is None:
            return DeliveryStatus.CANCELED
        if not sub.is_active:
            return DeliveryStatus.PARKED
        failing = self._health_of(row.subscription_id).failure_count > 0
        return DeliveryStatus.HELD if failing else DeliveryStatus.PENDING

    def _due_probes(self, now: datetime) -> list[str]:
        due = []
        for sub in self.subscriptions.values():
            health = self._health_of(sub.id)
            if not sub.is_active or health.failure_count == 0 or health.probe_at is None:
                continue
            lease_free = health.probe_delivery_id is None or (
                health.probe_lease_until is not None and health.probe_lease_until <= now
            )
            if health.probe_at <= now and lease_free:
                due.append(sub.id)
        return due

    def _claim(self, row: _DeliveryRow, lease: datetime, now: datetime) -> DeliveryJob:
        health = self._health_of(row.subscription_id)
        row.status, row.attempts, row.lease_until = DeliveryStatus.IN_FLIGHT, row.attempts + 1, lease
        row.claimed_generation = health.generation
        sub, event = self.subscriptions[row.subscription_id], self.events[row.event_id]
        secret, previous, until = sub.secret, sub.previous_secret, sub.previous_secret_until
        if sub.kind is SubscriptionKind.CALLBACK:
            stored = self._callback_secrets[sub.customer_id]
            secret, previous, until = stored.secret, stored.previous, stored.previous_until
        return DeliveryJob(
            row.id,
            row.event_id,
            sub.id,
            sub.url,
            secret,
            event.payload,
            row.attempts,
            event.created_at,
            health.generation,
            health.failure_count,
            previous if until is not None and until > now else None,
            sub.kind,
            sub.customer_id,
        )

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[str]:
        disabled = []
        for result in results:
            self.attempts.append(result)
            health = self._health_of(result.subscription_id)
            if health.probe_delivery_id == result.delivery_id:
                health.probe_delivery_id = health.probe_lease_until = None
            if result.succeeded:
                self._recover(result.subscription_id)
            elif result.circuit is not None and self._count_failure(result.circuit):
                disabled.append(result.subscription_id)
        for result in results:
            self._finish(result)
        if any(r.next_attempt_at is not None for r in results):
            self._notify_work()
        return disabled

    def _recover(self, subscription_id: str) -> None:
        health = self._health_of(subscription_id)
        if health.failure_count == 0:
            return
        health.failure_count, health.probe_at = 0, None
        health.probe_delivery_id = health.probe_lease_until = None
        self._move(subscription_id, {DeliveryStatus.HELD}, DeliveryStatus.PENDING)

    def _count_failure(self, change: CircuitChange) -> bool:
        sub = self.subscriptions.get(change.subscription_id)
        health = self._health_of(change.subscription_id)
        if sub is None or not sub.is_active or not (change.force or health.generation == change.generation):
            return False
        health.failure_count, health.generation = change.failure_count, health.generation + 1
        health.probe_at, health.probe_delivery_id, health.probe_lease_until = change.probe_at, None, None
        if change.disable is None:
            self._move(sub.id, {DeliveryStatus.PENDING}, DeliveryStatus.HELD)
            return False
        self.subscriptions[sub.id] = dataclasses.replace(
            sub, is_active=False, disabled_reason=change.disable, disabled_at=utcnow()
        )
        self._move(sub.id, {DeliveryStatus.PENDING, DeliveryStatus.HELD}, DeliveryStatus.PARKED)
        return True

    def _finish(self, result: AttemptResult) -> None:
        row = self.deliveries[result.delivery_id]
        if row.status is not DeliveryStatus.IN_FLIGHT or row.attempts != result.attempt_no:
            return
        row.lease_until, row.updated_at = None, utcnow()
        row.last_status, row.last_error = result.status_code, result.error
        row.delivered_at = row.updated_at if result.succeeded else None
        if result.succeeded:
            row.status = DeliveryStatus.DELIVERED
        elif result.next_attempt_at is None:
            row.status = DeliveryStatus.FAILED
        else:
            row.status, row.next_attempt_at = self._waiting(row), result.next_attempt_at

    def _move(self, subscription_id: str, sources: set[DeliveryStatus], target: DeliveryStatus) -> None:
        for row in self.deliveries.values():
            if row.subscription_id == subscription_id and row.status in sources:
                row.status, row.updated_at = target, utcnow()

    async def enable_subscription(self, customer_id: str, subscription_id: str) -> Subscription | None:
        sub = await self.get_subscription(customer_id, subscription_id)
        if sub is None:
            return None
        self.subscriptions[sub.id] = dataclasses.replace(
            self.subscriptions[sub.id], is_active=True, disabled_reason=None, disabled_at=None
        )
        health = self._health_of(sub.id)
        self._health[sub.id] = _Health(generation=health.generation + 1)
        now = utcnow()
        for row in self.deliveries.values():
            if row.subscription_id == sub.id and row.status in {DeliveryStatus.PARKED, DeliveryStatus.HELD}:
                row.status, row.next_attempt_at = DeliveryStatus.PENDING, now
        self._notify_work()
        return await self.get_subscription(customer_id, subscription_id)

    async def prune(self, *, deliveries_before: datetime, events_before: datetime, limit: int) -> int:
        finished = {DeliveryStatus.DELIVERED, DeliveryStatus.FAILED, DeliveryStatus.CANCELED}
        old = sorted(
            (
                r
                for r in self.deliveries.values()
                if r.status in finished and r.updated_at < deliveries_before
            ),
            key=lambda r: r.updated_at,
        )[:limit]
        for row in old:
            del self.deliveries[row.id]
        gone_ids = {row.id for row in old}
        kept = [a for a in self.attempts if a.delivery_id not in gone_ids]
        gone = len(old) + len(self.attempts) - len(kept)
        self.attempts = kept
        referenced = {row.event_id for row in self.deliveries.values()}
        stale = [e for e in self.events.values() if e.created_at < events_before and e.id not in referenced]
        for seen in [k for k, at in self.callbacks.items() if at < events_before][:limit]:
            del self.callbacks[seen]
            gone += 1
        for event in sorted(stale, key=lambda e: e.created_at)[:limit]:
            del self.events[event.id]
            if event.idempotency_key is not None:
                self._idempotency.pop((event.customer_id, event.idempotency_key), None)
            gone += 1
        return gone

    async def list_deliveries(
        self,
        customer_id: str,
        subscription_id: str,
        page: PageRequest,
        status: DeliveryStatus | None = None,
    ) -> Page[Delivery]:
        rows = [
            r.view()
            for r in self.deliveries.values()
            if r.customer_id == customer_id
            and r.subscription_id == subscription_id
            and (status is None or r.status is status)
        ]
        return _log_page(rows, page)

    async def get_delivery(self, customer_id: str, delivery_id: str) -> DeliveryDetail | None:
        row = self.deliveries.get(delivery_id)
        if row is None or row.customer_id != customer_id:
            return None
        attempts = [
            Attempt(
                a.attempt_no,
                a.started_at,
                a.duration_s,
                a.status_code,
                a.error,
                a.response_excerpt,
                a.succeeded,
            )
            for a in self.attempts
            if a.delivery_id == row.id
        ]
        return DeliveryDetail(row.view(), attempts)

    async def retry_delivery(self, customer_id: str, delivery_id: str) -> Delivery | None:
        row = self.deliveries.get(delivery_id)
        if row is None or row.customer_id != customer_id:
            return None
        if row.status is DeliveryStatus.IN_FLIGHT:
            raise Conflict("the delivery is being attempted right now")
        sub = self.subscriptions.get(row.subscription_id)
        if sub is None or not sub.is_active:
            raise Conflict("its subscription is deleted or disabled; enable it first")
        row.status, row.next_attempt_at, row.updated_at = self._waiting(row), utcnow(), utcnow()
        self._notify_work()
        return row.view()

    async def failed_delivery_ids(
        self, customer_id: str, subscription_id: str, since: datetime, until: datetime, limit: int
    ) -> list[str]:
        rows = sorted(
            (
                r
                for r in self.deliveries.values()
                if r.customer_id == customer_id
                and r.subscription_id == subscription_id
                and r.status is DeliveryStatus.FAILED
                and since <= r.created_at <= until
            ),
            key=lambda r: r.created_at,
        )
        return [r.id for r in rows[:limit]]

    async def requeue_deliveries(self, delivery_ids: Sequence[str]) -> int:
        count = 0
        for delivery_id in delivery_ids:
            row = self.deliveries.get(delivery_id)
            if row is not None and row.status is DeliveryStatus.FAILED:
                row.status, row.next_attempt_at, row.updated_at = self._waiting(row), utcnow(), utcnow()
                count += 1
        if count:
            self._notify_work()
        return count

    async def list_events(self, customer_id: str, page: PageRequest, type: str | None = None) -> Page[Event]:
        rows = [
            e
            for e in self.events.values()
            if e.customer_id == customer_id and (type is None or e.type == type)
        ]
        return _log_page(rows, page)

    async def get_event(self, customer_id: str, event_id: str) -> Event | None:
        event = self.events.get(event_id)
        return event if event is not None and event.customer_id == customer_id else None

    async def get_callback_secret(self, customer_id: str) -> CallbackSecret | None:
        return self._callback_secrets.get(customer_id)

    async def ensure_callback_secret(self, customer_id: str, secret: bytes) -> CallbackSecret:
        if customer_id not in self.customers:
            raise StoreError(f"customer {customer_id} does not exist")
        return self._callback_secrets.setdefault(customer_id, CallbackSecret(secret))

    async def rotate_callback_secret(
        self, customer_id: str, secret: bytes, previous_until: datetime
    ) -> CallbackSecret:
        if customer_id not in self.customers:
            raise StoreError(f"customer {customer_id} does not exist")
        old = self._callback_secrets.get(customer_id)
        rotated = CallbackSecret(
            secret, None if old is None else old.secret, None if old is None else previous_until
        )
        self._callback_secrets[customer_id] = rotated
        return rotated

    async def record_callback(
        self, receipt: CallbackReceipt, decide: Decide, *, delay_s: float = 0.0
    ) -> CallbackOutcome:
        seen = (receipt.customer_id, receipt.idempotency_key)
        if seen in self.callbacks:
            return CallbackOutcome(duplicate=True)
        self.callbacks[seen] = utcnow()
        call = (receipt.customer_id, receipt.carrier, receipt.call_id)
        # A JSON round trip, as the database does: decide must not rely on shared objects.
        state, event = decide(orjson.loads(self.calls[call]) if call in self.calls else None)
        self.calls[call] = orjson.dumps(state)
        if event is None:
            return CallbackOutcome(duplicate=False)
        return CallbackOutcome(duplicate=False, published=await self.publish(event, delay_s=delay_s))

    async def release_deliveries(self, delivery_ids: Sequence[str]) -> None:
        now = utcnow()
        for delivery_id in delivery_ids:
            row = self.deliveries[delivery_id]
            if row.status is DeliveryStatus.IN_FLIGHT:
                row.status, row.attempts, row.lease_until = self._waiting(row), row.attempts - 1, None
                row.next_attempt_at = now
            health = self._health_of(row.subscription_id)
            if health.probe_delivery_id == delivery_id:
                health.probe_delivery_id = health.probe_lease_until = None


def _log_page(items: Sequence[LogItem], page: PageRequest) -> Page[LogItem]:
    """Newest first by (created_at, id): keyset after a cursor, else from ``offset``."""
    ordered = sorted(items, key=lambda item: (item.created_at.timestamp(), item.id), reverse=True)
    if page.cursor:
        after = decode_log_cursor(page.cursor)
        ordered = [i for i in ordered if (i.created_at.timestamp(), i.id) < after]
    else:
        ordered = ordered[page.offset :]
    last = ordered[page.limit - 1] if len(ordered) > page.limit else None
    return Page(ordered[: page.limit], None if last is None else encode_log_cursor(last.created_at, last.id))


def _implements_store(store: MemoryStore) -> Store:
    """Lets mypy prove that MemoryStore satisfies the Store protocol."""
    return store
