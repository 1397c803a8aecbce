"""The ``Store`` protocol: the domain operations every storage backend provides."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from webhookd.models import (
    ApiKey,
    AttemptResult,
    Customer,
    DeliveryJob,
    NewEvent,
    PublishResult,
    Source,
    Subscription,
)

WorkListener = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a keyset-paginated list."""

    items: Sequence[Subscription]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class SubscriptionCreate:
    """The result of an idempotent create: the subscription, and whether this call made it."""

    subscription: Subscription
    created: bool


class Store(Protocol):
    """Durable state of webhookd, expressed as domain operations.

    Every write is durable when its coroutine returns. Implementations: ``SqliteStore`` (default),
    ``MemoryStore`` (tests). Timestamps are timezone-aware UTC datetimes.
    """

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None:
        """Flush pending writes and disconnect."""

    async def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers."""

    async def ensure_customer(self, customer_id: str, name: str | None = None) -> Customer:
        """Create the customer if missing; a given ``name`` replaces the stored one."""

    async def create_api_key(self, key: ApiKey) -> None: ...

    async def get_api_key(self, key_hash: str) -> ApiKey | None:
        """The key with this SHA-256 hash, or ``None``."""

    async def create_source(self, source: Source) -> None: ...

    async def get_source(self, source_id: str) -> Source | None: ...

    async def create_subscription(self, subscription: Subscription) -> SubscriptionCreate:
        """Insert, unless the customer already has one with the same url and set of events.

        In that case the existing subscription comes back with ``created=False``.
        """

    async def get_subscription(self, customer_id: str, subscription_id: str) -> Subscription | None:
        """The subscription if it exists, is not deleted and belongs to ``customer_id``."""

    async def list_subscriptions(
        self, customer_id: str, *, limit: int, cursor: str | None = None
    ) -> Page: ...

    async def delete_subscription(self, customer_id: str, subscription_id: str) -> bool:
        """Delete it and cancel its pending deliveries. ``False`` if there was nothing to delete."""

    async def enable_subscription(self, customer_id: str, subscription_id: str) -> Subscription | None:
        """Re-enable: reset the failure count and resume parked deliveries. ``None`` if not found."""

    async def publish(self, event: NewEvent, *, delay_s: float = 0.0) -> PublishResult:
        """Store the event and fan it out to every matching active subscription, atomically.

        Each delivery becomes due ``delay_s`` after the event (the retry schedule's first step).

        A repeated ``(customer_id, idempotency_key)`` stores nothing and returns the original
        event with ``created=False``.
        """

    async def claim_deliveries(self, *, limit: int, lease_s: float, now: datetime) -> list[DeliveryJob]:
        """Lease up to ``limit`` due deliveries: those of healthy subscriptions, plus one probe per
        failing subscription whose backoff has passed. Expired leases are claimable again."""

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[str]:
        """Store attempts, move each delivery on (delivered, pending, held, parked or failed) and
        apply each failure's ``CircuitChange``. Returns the ids of subscriptions this disabled."""

    async def release_deliveries(self, delivery_ids: Sequence[str]) -> None:
        """Give claimed deliveries back unattempted (graceful shutdown)."""

    async def prune(self, *, deliveries_before: datetime, events_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` finished deliveries last touched before ``deliveries_before``
        (with their attempts), and up to ``limit`` events created before ``events_before`` that no
        delivery refers to. Returns the rows deleted; 0 means nothing is left to prune."""

    def add_work_listener(self, listener: WorkListener) -> None:
        """Call ``listener`` (no arguments, on the event loop) whenever new work is committed."""


def events_key(events: Sequence[str]) -> str:
    """The canonical form of a set of event types: order and repeats do not matter."""
    return ",".join(sorted(set(events)))


def encode_cursor(last_id: str) -> str:
    """An opaque keyset cursor that resumes after ``last_id``."""
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The id a cursor resumes after. Raises ``ValueError`` for a cursor we did not issue."""
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("cursor is not one this API returned") from None
    if not decoded.isascii() or "_" not in decoded:
        raise ValueError("cursor is not one this API returned")
    return decoded
