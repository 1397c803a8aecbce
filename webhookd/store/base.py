"""The ``Store`` protocol: the domain operations every storage backend provides."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from webhookd.models import (
    ID_BODY_PATTERN,
    ApiKey,
    Attempt,
    AttemptResult,
    Call,
    CallbackSecret,
    CallTimeline,
    Carrier,
    Customer,
    CustomerSummary,
    DashboardAccess,
    Delivery,
    DeliveryJob,
    DeliveryStatus,
    Disabled,
    Event,
    EventDelivery,
    NewEvent,
    PublishResult,
    SignatureScheme,
    Source,
    Subscription,
    SubscriptionState,
    id_pattern,
)
from webhookd.store.scheduling import ClaimRequest

WorkListener = Callable[[], None]
T = TypeVar("T")

DeliveryClaim = tuple[str, int]
"""A worker's claim on a delivery: its id and the attempt number it was claimed for."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: keyset ``next_cursor`` (``None`` at the end)."""

    items: Sequence[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PageRequest:
    """How much of a list to read: ``cursor`` (keyset) wins over ``offset`` (the ``page`` alias)."""

    limit: int
    cursor: str | None = None
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SubscriptionUpdate:
    """A PATCH: ``None`` leaves a field as it is (``description=""`` clears it)."""

    url: str | None = None
    events: tuple[str, ...] | None = None
    description: str | None = None
    rate_limit_per_second: int | None = None
    """``0`` removes the limit."""
    ordered: bool | None = None
    headers: bytes | None = None
    """The new custom headers' ciphertext; ``b""`` removes them all."""


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What the metrics scrape shows of the outbox; cheap to read whatever the table sizes."""

    deliveries_by_status: dict[str, int]
    oldest_due_age_s: float
    """How long the longest-waiting due delivery, pending or held, has been due (0 when none is)."""
    subscriptions_by_state: dict[str, int]
    """``active``, ``failing`` and ``disabled`` webhook subscriptions."""


@dataclass(frozen=True, slots=True)
class Backlog:
    """One subscription's unfinished deliveries, by where they wait."""

    subscription_id: str
    customer_id: str
    url: str
    is_active: bool
    failure_count: int
    rate_limit_per_second: int | None
    ordered: bool
    pending: int
    """Waiting for a worker: due, scheduled for a retry, paced or behind their ordering key."""
    held: int
    in_flight: int
    parked: int
    oldest_due_at: datetime | None
    """When the longest-waiting pending or held delivery became due."""


@dataclass(frozen=True, slots=True)
class CallbackReceipt:
    """A verified carrier callback, identified for dedupe and for its call's state."""

    customer_id: str
    carrier: str
    call_id: str
    idempotency_key: str
    status_raw: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    duplicate: bool
    """The callback was seen before: nothing was stored."""
    published: PublishResult | None = None
    """The event it produced, if it moved the call on."""


Decide = Callable[[dict[str, Any] | None], tuple[dict[str, Any], NewEvent | None]]
"""Given a call's stored state (``None`` for a new call), its next state and the event to publish."""


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    delivery: Delivery
    attempts: Sequence[Attempt]


@dataclass(frozen=True, slots=True)
class AttemptTally:
    """A subscription's attempts in one time bucket of an activity window, and how many succeeded."""

    subscription_id: str
    bucket: int
    """The bucket's index: 0 is the one that starts at the window's start."""
    attempts: int
    succeeded: int


@dataclass(frozen=True, slots=True)
class Activity:
    """A customer's subscriptions' attempts over a window: tallies by bucket, and each one's latest."""

    tallies: Sequence[AttemptTally]
    last_attempts: Mapping[str, Attempt]
    """By subscription id; a subscription with no attempt in the window is absent."""


@dataclass(frozen=True, slots=True)
class SubscriptionCreate:
    """The result of an idempotent create: the subscription, and whether this call made it."""

    subscription: Subscription
    created: bool


class Outbox(Protocol):
    """What the delivery worker and ingest need: publish and record callbacks, then claim,
    record and release deliveries, with the workers' registry, pruning and the scrape's counts."""

    async def publish(self, event: NewEvent, *, delay_s: float = 0.0) -> PublishResult:
        """Store the event and fan it out to every matching active subscription, atomically.

        Each delivery becomes due ``delay_s`` after the event (the retry schedule's first step).

        A repeated ``(customer_id, idempotency_key)`` stores nothing and returns the original
        event with ``created=False``.
        """

    async def publish_many(self, events: Sequence[NewEvent], *, delay_s: float = 0.0) -> list[PublishResult]:
        """Publish each of ``events`` as :meth:`publish` does, all in one transaction: every event is
        stored, or (if one fails) none is. One result per event, in order.

        An event repeating the ``(customer_id, idempotency_key)`` of one before it in ``events`` is a
        repeat of that one: its result is that one's event with ``created=False``.
        """

    async def record_callback(
        self, receipt: CallbackReceipt, decide: Decide, *, delay_s: float = 0.0
    ) -> CallbackOutcome:
        """Atomically: drop a duplicate callback; else record it, run ``decide`` on its call's state,
        store the new state, and publish the event ``decide`` returns (as :meth:`publish` does)."""

    async def register_worker(self, worker_id: str, now: datetime) -> None:
        """Make ``worker_id`` known as alive: its claims last while it does."""

    async def worker_heartbeat(self, worker_id: str, now: datetime) -> None:
        """Say that ``worker_id`` still lives (every ``HEARTBEAT_S``)."""

    async def retire_worker(self, worker_id: str) -> None:
        """Forget ``worker_id`` at a clean stop, after it released what it had claimed."""

    async def claim_deliveries(self, request: ClaimRequest) -> list[DeliveryJob]:
        """Claim due deliveries for ``request.worker_id``, a few per subscription in turn and never
        more than ``request.per_subscription`` in flight for one subscription, plus one probe per
        failing subscription whose backoff has passed. Claims of dead workers go back to wait first,
        keeping their place."""

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[Disabled]:
        """Store attempts, apply their outcomes in order to their subscriptions' current health
        (count, hold, probe, park, disable: see ``webhookd.store.circuit``) and move each delivery on
        (delivered, pending, held, parked or failed), in one transaction. A result whose claim is no
        longer held (taken back since) stores its attempt and changes nothing else. Returns the
        subscriptions this disabled, each with the reason of the outcome that did it."""

    async def release_deliveries(self, claims: Sequence[DeliveryClaim]) -> None:
        """Give claimed deliveries back unattempted, keeping their place (graceful shutdown, or a
        subscription put on hold). A claim taken back and claimed again since is no longer this
        worker's: it stays as it is."""

    async def prune(self, *, deliveries_before: datetime, events_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` finished deliveries last touched before ``deliveries_before``
        (with their attempts), and up to ``limit`` events created before ``events_before`` that no
        delivery refers to; with the events go dashboard links and signed-out sessions that expired
        before ``events_before``. Returns the rows deleted; 0 means nothing is left to prune."""

    async def outbox_stats(self, now: datetime) -> OutboxStats:
        """Counts for the metrics scrape, without scanning the deliveries table."""

    def add_work_listener(self, listener: WorkListener) -> None:
        """Call ``listener`` (no arguments, on the event loop) whenever new work is committed."""


class Management(Protocol):
    """What the management API needs: tenants, keys, sources, subscriptions and the logs."""

    async def ensure_customer(self, customer_id: str, name: str | None = None) -> Customer:
        """Create the customer if missing; a given ``name`` replaces the stored one."""

    async def create_api_key(self, key: ApiKey) -> None: ...

    async def get_api_key(self, key_hash: str) -> ApiKey | None:
        """The key with this SHA-256 hash, or ``None``; a revoked key has its ``revoked_at``."""

    async def create_source(self, source: Source) -> None: ...

    async def get_source(self, source_id: str) -> Source | None: ...

    async def create_subscription(self, subscription: Subscription) -> SubscriptionCreate:
        """Insert, unless the customer already has one with the same url and set of events.

        In that case the existing subscription comes back with ``created=False``.
        """

    async def get_subscription(self, customer_id: str | None, subscription_id: str) -> Subscription | None:
        """The subscription if it exists, is not deleted and belongs to ``customer_id`` (to anyone
        with ``None``: an operator's look-up)."""

    async def get_customer(self, customer_id: str) -> Customer | None: ...

    async def list_subscriptions(
        self, customer_id: str, page: PageRequest, state: SubscriptionState | None = None
    ) -> Page[Subscription]:
        """The customer's webhook subscriptions (those in ``state`` if given), oldest first.
        ``ValueError`` for a bad cursor."""

    async def update_subscription(
        self, customer_id: str, subscription_id: str, update: SubscriptionUpdate
    ) -> Subscription | None:
        """Apply a PATCH. ``Conflict`` if the new url and events match another subscription."""

    async def rotate_subscription_secret(
        self,
        customer_id: str,
        subscription_id: str,
        secret: bytes,
        previous_until: datetime,
        scheme: SignatureScheme = SignatureScheme.V1,
        public_key: str | None = None,
    ) -> Subscription | None:
        """Make ``secret`` (of ``scheme``, verified with ``public_key`` for v1a) current; the old
        one, whatever its scheme, keeps signing until ``previous_until``."""

    async def list_deliveries(
        self,
        customer_id: str,
        subscription_id: str,
        page: PageRequest,
        status: DeliveryStatus | None = None,
    ) -> Page[Delivery]:
        """A subscription's deliveries, newest first."""

    async def get_delivery(self, customer_id: str | None, delivery_id: str) -> DeliveryDetail | None:
        """The delivery with its attempts, if it belongs to ``customer_id`` (to anyone with ``None``)."""

    async def retry_delivery(self, customer_id: str, delivery_id: str) -> Delivery | None:
        """Send it again now. ``Conflict`` while in flight, or if its subscription is gone or off."""

    async def failed_delivery_ids(
        self, customer_id: str, subscription_id: str, since: datetime, until: datetime, limit: int
    ) -> list[str]:
        """Failed deliveries created in ``[since, until]``, oldest first (for recover)."""

    async def requeue_deliveries(self, delivery_ids: Sequence[str]) -> int:
        """Re-queue those of these deliveries that are still failed; returns how many."""

    async def list_events(self, customer_id: str, page: PageRequest, type: str | None = None) -> Page[Event]:
        """The event log, newest first."""

    async def get_event(self, customer_id: str | None, event_id: str) -> Event | None:
        """The event ``event_id`` if ``customer_id`` owns it; with ``None``, whoever owns it (an admin)."""

    async def get_callback_secret(self, customer_id: str) -> CallbackSecret | None: ...

    async def ensure_callback_secret(self, customer_id: str, secret: bytes) -> CallbackSecret:
        """Store ``secret`` unless the customer has one already; return what is stored."""

    async def rotate_callback_secret(
        self, customer_id: str, secret: bytes, previous_until: datetime
    ) -> CallbackSecret: ...

    async def delete_subscription(self, customer_id: str, subscription_id: str) -> bool:
        """Delete it and cancel its pending deliveries. ``False`` if there was nothing to delete."""

    async def enable_subscription(self, customer_id: str, subscription_id: str) -> Subscription | None:
        """Re-enable: reset the failure count and resume parked deliveries. ``None`` if not found."""

    async def top_backlogs(self, limit: int) -> list[Backlog]:
        """The subscriptions with the most unfinished deliveries, most first (scans those rows)."""

    async def list_attempts(self, customer_id: str, delivery_ids: Sequence[str]) -> dict[str, list[Attempt]]:
        """The attempts of those of ``delivery_ids`` that are ``customer_id``'s, oldest first, by
        delivery id (one read for a page of deliveries)."""

    async def subscription_activity(self, customer_id: str, since: datetime, bucket_s: int) -> Activity:
        """The attempts of the customer's live subscriptions started at or after ``since``, counted
        in buckets of ``bucket_s`` seconds, with each subscription's latest attempt among them."""

    async def list_calls(self, customer_id: str, page: PageRequest) -> Page[Call]:
        """The customer's calls, latest callback first, with their callbacks and events counted.
        ``ValueError`` for a bad cursor."""

    async def get_call(self, customer_id: str, carrier: Carrier, call_id: str) -> CallTimeline | None:
        """The call's callbacks (as received), the events they produced (oldest first) and those
        events' deliveries; ``None`` if ``customer_id`` has no such call."""

    async def event_deliveries(
        self, customer_id: str, event_ids: Sequence[str]
    ) -> dict[str, list[EventDelivery]]:
        """The deliveries of those of ``event_ids`` that are ``customer_id``'s, oldest first, by event
        id (one read for a page of events)."""

    async def create_dashboard_link(
        self, token_hash: str, access: DashboardAccess, created_at: datetime, expires_at: datetime
    ) -> None:
        """Store a dashboard link by its token's SHA-256 (never the token), with what it opens."""

    async def redeem_dashboard_link(self, token_hash: str, now: datetime) -> DashboardAccess | None:
        """Mark the link used and return what it opens, in one write, if it is unused and expires
        after ``now``; else ``None`` (so a link opens one session, even when opened twice at once)."""

    async def end_dashboard_session(self, session_id: str, expires_at: datetime) -> None:
        """Remember that the session signed out, until ``expires_at`` when it would have ended."""

    async def dashboard_session_ended(self, session_id: str) -> bool:
        """Whether the session signed out (its signed cookie no longer opens pages)."""

    # -- the operator's, across customers -------------------------------------------------------

    async def list_customers(self, page: PageRequest) -> Page[CustomerSummary]:
        """Every customer by id, with its subscription and key counts. ``ValueError`` for a bad cursor."""

    async def troubled_subscriptions(self, page: PageRequest) -> Page[Subscription]:
        """Every customer's live disabled or failing webhook subscriptions, by id. ``ValueError`` for a
        bad cursor."""

    async def mark_api_key_used(self, key_id: str, at: datetime) -> None:
        """Record that the key authenticated a request ``at`` (unless a later use is recorded)."""

    async def list_api_keys(self, customer_id: str) -> list[ApiKey]:
        """The customer's keys, revoked ones too, oldest first."""

    async def revoke_api_key(self, customer_id: str | None, key_id: str, now: datetime) -> ApiKey | None:
        """Revoke the key ``key_id`` of ``customer_id`` (of anyone with ``None``); it is then returned
        with ``revoked_at`` set, as :meth:`get_api_key` returns it from then on. ``None`` if not found."""

    def key_revocations(self) -> int:
        """A number that changes whenever a key is revoked, by this process or any other on the same
        database, once the revocation is committed: a node's key cache forgets every key when it
        changes. Cheap enough to ask on every request (no database round trip)."""


class Store(Outbox, Management, Protocol):
    """Durable state of webhookd, expressed as domain operations: the outbox side and the
    management side of one database.

    Every write is durable when its coroutine returns. Implementations: ``SqliteStore`` (the
    default) and ``PostgresStore``. Timestamps are timezone-aware UTC datetimes.
    """

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None:
        """Flush pending writes and disconnect."""

    async def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers."""


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size``: one multi-row statement each."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class DistinctKeys:
    """A batch of events less those repeating an earlier one's idempotency key: only ``events`` are
    stored, and :meth:`results` answers every event of the batch from what storing them gave."""

    events: list[NewEvent]
    positions: list[int]
    """For each event of the batch, the position in ``events`` of the one stored for it."""

    @classmethod
    def of(cls, batch: Sequence[NewEvent]) -> DistinctKeys:
        events: list[NewEvent] = []
        positions: list[int] = []
        first: dict[tuple[str, str], int] = {}
        for event in batch:
            key = event.idempotency_key
            position = len(events) if key is None else first.setdefault((event.customer_id, key), len(events))
            if position == len(events):
                events.append(event)
            positions.append(position)
        return cls(events, positions)

    def results(self, stored: Sequence[PublishResult]) -> list[PublishResult]:
        """One result per event of the batch: a repeat within it gets its first's event, not created."""
        answered: set[int] = set()
        results = []
        for position in self.positions:
            result = stored[position]
            if position in answered:
                result = PublishResult(result.event, created=False, deliveries=0)
            answered.add(position)
            results.append(result)
        return results


def first_result_per_claim(results: Sequence[AttemptResult]) -> list[AttemptResult]:
    """One result for each (delivery, attempt number), the first. Finishing results one by one
    keeps the first anyway (the attempts guard refuses the rest); a set-based finish, which joins
    every row at once, must be told."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for result in results:
        claim = (result.delivery_id, result.attempt_no)
        if claim not in seen:
            seen.add(claim)
            kept.append(result)
    return kept


def events_key(events: Sequence[str]) -> str:
    """The canonical form of a set of event types: order and repeats do not matter."""
    return ",".join(sorted(set(events)))


# Cursors are positions, not tokens: every string of a cursor's pattern names a place in its list
# (the page after it), so the pattern the OpenAPI document gives is exactly what is accepted.


def cursor_pattern(prefix: str) -> str:
    """An id-ordered list's cursor: the last id of the page before (``sub_...``)."""
    return id_pattern(prefix)


def log_cursor_pattern(prefix: str) -> str:
    """A newest-first log's cursor: the page before's last item as ``created_at-id``, the time in
    seconds since 1970 (up to year 5138, which every store holds)."""
    return rf"^[0-9]{{1,11}}(?:\.[0-9]{{1,17}})?-{prefix}_{ID_BODY_PATTERN}$"


def _not_ours(cursor: str, pattern: str) -> bool:
    return re.fullmatch(pattern, cursor) is None  # re caches the few compiled patterns


NOT_OUR_CURSOR = "cursor is not one this API returned: send a next_cursor back as it came"


def encode_cursor(last_id: str) -> str:
    """A keyset cursor that resumes after ``last_id``."""
    return last_id


def decode_cursor(cursor: str, prefix: str) -> str:
    """The id a cursor resumes after. Raises ``ValueError`` for one outside its pattern."""
    if _not_ours(cursor, cursor_pattern(prefix)):
        raise ValueError(NOT_OUR_CURSOR)
    return cursor


def encode_log_cursor(created_at: datetime, item_id: str) -> str:
    """A cursor that resumes a newest-first log after the item ``(created_at, item_id)``."""
    return f"{created_at.timestamp()!r}-{item_id}"  # repr: the exact stored double


def decode_log_cursor(cursor: str, prefix: str) -> tuple[float, str]:
    """The ``(created_at, id)`` a log cursor resumes after; ``ValueError`` for a foreign cursor."""
    if _not_ours(cursor, log_cursor_pattern(prefix)):
        raise ValueError(NOT_OUR_CURSOR)
    moment, _, item_id = cursor.partition("-")
    return float(moment), item_id


def call_cursor_pattern() -> str:
    """The calls list's cursor: the page before's last call as ``updated_at-carrier:call_id`` (the
    call id as stored, whatever it holds but NUL)."""
    carriers = "|".join(c.value for c in Carrier)
    return rf"^[0-9]{{1,11}}(?:\.[0-9]{{1,17}})?-(?:{carriers}):[^\x00]+$"


def encode_call_cursor(call: Call) -> str:
    """A cursor that resumes the calls list after ``call``."""
    return f"{call.updated_at.timestamp()!r}-{call.ref}"


def decode_call_cursor(cursor: str) -> tuple[float, str, str]:
    """The ``(updated_at, carrier, call_id)`` a calls cursor resumes after; ``ValueError`` otherwise."""
    if _not_ours(cursor, call_cursor_pattern()):
        raise ValueError(NOT_OUR_CURSOR)
    moment, _, ref = cursor.partition("-")
    carrier, _, call_id = ref.partition(":")
    return float(moment), carrier, call_id


LogItem = TypeVar("LogItem", Delivery, Event)


def log_page(items: list[LogItem], limit: int) -> Page[LogItem]:
    """A newest-first log page from ``limit + 1`` rows: the extra row says another page follows."""
    last = items[limit - 1] if len(items) > limit else None
    cursor = None if last is None else encode_log_cursor(last.created_at, last.id)
    return Page(items[:limit], cursor)
