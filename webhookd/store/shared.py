"""What both SQL stores share: the column lists, the mapping of rows to models, and the rule for
where a delivery waits. Each backend says only how it stores a moment (see :class:`Rows`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import orjson

from webhookd.models import (
    AccessKind,
    ApiKey,
    Attempt,
    Call,
    CallbackSecret,
    CallCallback,
    Carrier,
    Customer,
    CustomerSummary,
    DashboardAccess,
    Delivery,
    DeliveryStatus,
    DisabledReason,
    Event,
    EventDelivery,
    Scope,
    SignatureScheme,
    Source,
    Subscription,
    SubscriptionKind,
)
from webhookd.store.base import Backlog, events_key

SUB_COLUMNS = (
    "id, customer_id, url, events_key, description, secret, is_active, created_at, failure_count,"
    " disabled_reason, disabled_at, previous_secret, previous_secret_until, kind, rate_limit_per_second,"
    " ordered, headers, signature_scheme, public_key"
)
DELIVERY_COLUMNS = (
    "id, event_id, subscription_id, customer_id, status, attempts, next_attempt_at, created_at,"
    " updated_at, last_status, last_error, delivered_at"
)
EVENT_COLUMNS = "id, customer_id, type, idempotency_key, payload, created_at, callback_url, ordering_key"
ATTEMPT_COLUMNS = "attempt_no, started_at, duration_s, status_code, error, response_excerpt, succeeded"
API_KEY_COLUMNS = "id, customer_id, key_hash, scopes, name, created_at, revoked_at, last_used_at"
CUSTOMER_COLUMNS = "id, name, created_at"
SOURCE_COLUMNS = "id, customer_id, carrier, credentials, created_at"
CALL_COLUMNS = "carrier, call_id, state, updated_at"
CALLBACK_COLUMNS = "carrier, status_raw, received_at, event_id"
CALLBACK_SECRET_COLUMNS = "callback_secret, previous_callback_secret, previous_callback_secret_until"

INSERT_SUBSCRIPTION = """
INSERT INTO subscriptions (id, customer_id, url, events_key, description, secret, is_active,
                           created_at, updated_at, rate_limit_per_second, ordered, headers,
                           signature_scheme, public_key)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (customer_id, url, events_key) WHERE deleted_at IS NULL DO NOTHING
"""
"""Insert unless the customer has a live one with the same url and events: the unique index decides."""


def new_subscription(sub: Subscription, stored_now: Any) -> tuple[object, ...]:
    """The values :data:`INSERT_SUBSCRIPTION` stores for ``sub``, made at ``stored_now``."""
    return (
        *(sub.id, sub.customer_id, sub.url, events_key(sub.events), sub.description, sub.secret, True),
        *(stored_now, stored_now, sub.rate_limit_per_second, sub.ordered, sub.headers),
        *(sub.signature_scheme.value, sub.public_key),
    )


ROTATE_SUBSCRIPTION_SECRET = """
UPDATE subscriptions SET previous_secret = secret, previous_secret_until = ?, secret = ?,
    signature_scheme = ?, public_key = ?, updated_at = ?
WHERE id = ? AND customer_id = ? AND kind = 'webhook' AND deleted_at IS NULL
"""
"""Make a new secret (of either scheme) current; the old one keeps signing until
``previous_secret_until``, whatever its scheme."""


INSERT_DASHBOARD_LINK = (
    "INSERT INTO dashboard_links (token_hash, kind, customer_id, created_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
REDEEM_DASHBOARD_LINK = """
UPDATE dashboard_links SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?
RETURNING kind, customer_id
"""
"""One statement, so two requests that open the same link at once cannot both get a session."""

END_DASHBOARD_SESSION = (
    "INSERT INTO dashboard_session_ends (session_id, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING"
)
"""Remember a signed-out session until it would have ended anyway (then prune forgets it)."""

REVOKE_API_KEY = f"""
UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?)
WHERE id = ? AND customer_id = coalesce(?, customer_id)
RETURNING {API_KEY_COLUMNS}
"""
"""Revoke a key (of the given customer, or of anyone's with ``NULL``); a second revoke keeps the
first time."""

MARK_API_KEY_USED = (
    "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)"
)
"""Record a use; a late write from another node never moves the time back."""

EXPIRED_TABLES = (
    ("dashboard_links", "token_hash", "expires_at"),
    ("dashboard_session_ends", "session_id", "expires_at"),
)
"""Rows useless once expired (a link that can no longer open, a session that has ended anyway):
prune deletes them with the events' cutoff, the simplest bound that is always past their expiry."""


def waiting_status(s: str) -> str:
    """Where a delivery waits for its next attempt, given its subscription's columns (``s`` is their
    prefix, such as ``"s."``): nowhere once the subscription is deleted; parked while it is disabled;
    held while it is failing (only its probe goes out); else pending."""
    return (
        f"CASE WHEN {s}deleted_at IS NOT NULL THEN 'canceled' WHEN NOT {s}is_active THEN 'parked'"
        f" WHEN {s}failure_count > 0 THEN 'held' ELSE 'pending' END"
    )


SUBSCRIPTION_STATES = (
    "SELECT CASE WHEN NOT is_active THEN 'disabled' WHEN failure_count > 0 THEN 'failing' ELSE 'active' END,"
    " count(*) FROM subscriptions WHERE deleted_at IS NULL AND kind = 'webhook' GROUP BY 1"
)
"""How many live webhook subscriptions are ``active``, ``failing`` and ``disabled``, for the metrics."""


def subscription_states(rows: Iterable[Any]) -> dict[str, int]:
    """The counts :data:`SUBSCRIPTION_STATES` selected, with every state present."""
    return {"active": 0, "failing": 0, "disabled": 0} | {row[0]: row[1] for row in rows}


class Rows:
    """Maps the rows the column lists above select to models, and times to how a backend stores
    them: ``moment`` reads a stored time, ``stored`` writes one, and ``cursor_moment`` turns a log
    cursor's epoch seconds (the exact stored double) into what compares with ``created_at``."""

    def __init__(
        self,
        moment: Callable[[Any], datetime],
        stored: Callable[[datetime], Any],
        cursor_moment: Callable[[float], Any],
        scopes: Callable[[Any], Iterable[str]],
    ) -> None:
        self.moment, self.stored, self.cursor_moment = moment, stored, cursor_moment
        self.scopes = scopes
        """An API key's stored scopes, as names."""

    def api_key(self, row: Any) -> ApiKey:
        scopes = frozenset(Scope(name) for name in self.scopes(row[3]) if name)
        created_at, revoked_at, last_used_at = self.moment(row[5]), self.maybe(row[6]), self.maybe(row[7])
        return ApiKey(row[0], row[1], row[2], scopes, row[4], created_at, revoked_at, last_used_at)

    def maybe(self, value: Any) -> datetime | None:
        return None if value is None else self.moment(value)

    def subscription(self, row: Any) -> Subscription:
        return Subscription(
            id=row[0],
            customer_id=row[1],
            url=row[2],
            events=tuple(row[3].split(",")),
            description=row[4],
            secret=row[5],
            is_active=bool(row[6]),
            created_at=self.moment(row[7]),
            failure_count=row[8],
            disabled_reason=None if row[9] is None else DisabledReason(row[9]),
            disabled_at=self.maybe(row[10]),
            previous_secret=row[11],
            previous_secret_until=self.maybe(row[12]),
            kind=SubscriptionKind(row[13]),
            rate_limit_per_second=row[14],
            ordered=bool(row[15]),
            headers=None if row[16] is None else bytes(row[16]),
            signature_scheme=SignatureScheme(row[17]),
            public_key=row[18],
        )

    def delivery(self, row: Any) -> Delivery:
        return Delivery(
            id=row[0],
            event_id=row[1],
            subscription_id=row[2],
            customer_id=row[3],
            status=DeliveryStatus(row[4]),
            attempts=row[5],
            next_attempt_at=self.maybe(row[6]),
            created_at=self.moment(row[7]),
            updated_at=self.maybe(row[8]),
            last_status=row[9],
            last_error=row[10],
            delivered_at=self.maybe(row[11]),
        )

    def backlog(self, row: Any) -> Backlog:
        """A row of ``reads.TOP_BACKLOGS``."""
        return Backlog(
            subscription_id=row[0],
            customer_id=row[1],
            url=row[2],
            is_active=bool(row[3]),
            failure_count=row[4],
            rate_limit_per_second=row[5],
            ordered=bool(row[6]),
            pending=row[7],
            held=row[8],
            in_flight=row[9],
            parked=row[10],
            oldest_due_at=self.maybe(row[11]),
        )

    def event(self, row: Any) -> Event:
        return Event(row[0], row[1], row[2], row[3], row[4], self.moment(row[5]), row[6], row[7])

    def attempt(self, row: Any) -> Attempt:
        return Attempt(row[0], self.moment(row[1]), row[2], row[3], row[4], row[5] or b"", bool(row[6]))

    def source(self, row: Any) -> Source:
        return Source(row[0], row[1], Carrier(row[2]), row[3], self.moment(row[4]))

    def customer(self, row: Any) -> Customer:
        return Customer(row[0], row[1], self.moment(row[2]))

    def customer_summary(self, row: Any) -> CustomerSummary:
        """A row of ``reads.CUSTOMER_SUMMARIES``."""
        return CustomerSummary(self.customer(row), row[3], row[4], row[5], row[6])

    @staticmethod
    def access(row: Any) -> DashboardAccess:
        """A redeemed link's ``kind, customer_id``."""
        return DashboardAccess(AccessKind(row[0]), row[1])

    def callback_secret(self, row: Any) -> CallbackSecret | None:
        return None if row is None or row[0] is None else CallbackSecret(row[0], row[1], self.maybe(row[2]))

    def event_delivery(self, row: Any) -> EventDelivery:
        """A row of :data:`DELIVERY_COLUMNS` followed by its subscription's url."""
        return EventDelivery(self.delivery(row), row[12])

    def call(self, row: Any) -> Call:
        """A row of :data:`CALL_COLUMNS` followed by its callback and event counts."""
        state = {} if row[2] is None else orjson.loads(row[2])  # SQLite: JSON bytes; PostgreSQL: jsonb text
        return Call(Carrier(row[0]), row[1], state, self.moment(row[3]), row[4], row[5])

    def call_callback(self, row: Any) -> CallCallback:
        return CallCallback(Carrier(row[0]), row[1], self.moment(row[2]), row[3])
