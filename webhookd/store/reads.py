"""The reads both SQL stores run the same way, written once.

The SQL here uses ``?`` placeholders; a backend supplies three ways to run a read (see
:class:`SharedReads`) and says how it stores a time. SQLite runs the SQL as it is, on read
connections kept apart by cost; PostgreSQL numbers the placeholders (``$1``, ``$2``...).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from webhookd.inputs import is_customer_id
from webhookd.models import (
    ApiKey,
    Attempt,
    Call,
    CallbackSecret,
    CallTimeline,
    Carrier,
    Customer,
    CustomerSummary,
    Delivery,
    DeliveryStatus,
    Event,
    EventDelivery,
    Source,
    Subscription,
    SubscriptionState,
)
from webhookd.store.base import (
    NOT_OUR_CURSOR,
    Activity,
    AttemptTally,
    Backlog,
    DeliveryDetail,
    Page,
    PageRequest,
    decode_call_cursor,
    decode_cursor,
    decode_log_cursor,
    encode_call_cursor,
    encode_cursor,
    events_key,
    log_page,
)
from webhookd.store.shared import (
    API_KEY_COLUMNS,
    ATTEMPT_COLUMNS,
    CALL_COLUMNS,
    CALLBACK_COLUMNS,
    CALLBACK_SECRET_COLUMNS,
    CUSTOMER_COLUMNS,
    DELIVERY_COLUMNS,
    EVENT_COLUMNS,
    SOURCE_COLUMNS,
    SUB_COLUMNS,
    Rows,
)

_ID_PREFIX = {"deliveries": "dlv", "events": "evt"}
"""The id prefix of each log's items, which its cursors end with."""


def _live_subscriptions(condition: str, order: str = "") -> str:
    """A customer's live subscriptions that meet ``condition``."""
    where = f"customer_id = ? AND {condition} AND deleted_at IS NULL"
    return f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE {where}{order}"


_IN_STATE = {
    None: "TRUE",
    SubscriptionState.ACTIVE: "is_active AND failure_count = 0",
    SubscriptionState.FAILING: "is_active AND failure_count > 0",
    SubscriptionState.DISABLED: "NOT is_active",
}
"""The condition each :class:`SubscriptionState` names (``None``: any), as ``Subscription.state``
tells them apart."""
_ANYONES = "customer_id = coalesce(?, customer_id)"
"""The customer's rows, or with ``None`` (an operator's read) anyone's."""

_ATTEMPTS_OF = ", ".join(f"a.{column}" for column in ATTEMPT_COLUMNS.split(", "))
_LIVE_OF_CUSTOMER = "s.customer_id = ? AND s.kind = 'webhook' AND s.deleted_at IS NULL"
_WINDOW = (
    " FROM subscriptions AS s JOIN attempts AS a ON a.subscription_id = s.id"
    f" WHERE {_LIVE_OF_CUSTOMER} AND a.started_at >= ?"
)
"""The attempts of a customer's live subscriptions since a moment: an index range of each
subscription's attempts by time, so a page costs the window's rows, not the subscriptions' history."""
_LAST_ATTEMPTS = (
    f"SELECT {_ATTEMPTS_OF}, s.id FROM subscriptions AS s JOIN attempts AS a ON a.id = (SELECT l.id"
    " FROM attempts AS l WHERE l.subscription_id = s.id AND l.started_at >= ?"
    f" ORDER BY l.started_at DESC, l.id DESC LIMIT 1) WHERE {_LIVE_OF_CUSTOMER}"
)


_NEWEST_CALLS = " ORDER BY updated_at DESC, carrier DESC, call_id DESC LIMIT ? OFFSET ?"
"""A customer's calls, latest callback first: one walk down the calls_by_customer index."""
_OF_CALL = "customer_id = ? AND carrier = ? AND call_id = ?"
# {by_call} sends the planner to call_callbacks_by_call where it needs telling: SQLite, without
# statistics, would rather walk all of the customer's callbacks along the primary key.
CALLBACK_COUNT = (
    "SELECT carrier, call_id, count(*), count(DISTINCT event_id) FROM call_callbacks {by_call}"
    f" WHERE {_OF_CALL} GROUP BY carrier, call_id"
)
"""One call's callbacks and the distinct events they produced; a page's calls are one UNION ALL of
these, an index range each."""
CALLBACKS = (
    f"SELECT {CALLBACK_COLUMNS} FROM call_callbacks {{by_call}} WHERE {_OF_CALL}"
    " ORDER BY received_at, idempotency_key"
)
# Sorted after the read: an ORDER BY here sends SQLite down the customer's event log index (which
# yields that order), through every event the customer has, instead of a probe per id.
EVENTS_BY_ID = f"SELECT {EVENT_COLUMNS} FROM events WHERE id IN ({{marks}}) AND customer_id = ?"
EVENT_DELIVERIES = (
    f"SELECT {', '.join(f'd.{column}' for column in DELIVERY_COLUMNS.split(', '))}, s.url"
    " FROM deliveries AS d JOIN subscriptions AS s ON s.id = d.subscription_id"
    " WHERE d.event_id IN ({marks}) AND d.customer_id = ? ORDER BY d.created_at, d.id"
)
"""The deliveries of a few events, with the URL each goes to: the deliveries_by_event index."""


def _next_cursor(ids: list[str], found: int, limit: int) -> str | None:
    """The cursor after a page of ``ids``, if more than ``limit`` rows were ``found``."""
    return encode_cursor(ids[-1]) if found > limit else None


@functools.lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """``sql`` with its ``?`` placeholders numbered as PostgreSQL wants them: ``$1``, ``$2``..."""
    counter = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


OPERATOR = ""
"""The ``turn`` of reads across customers: the metrics scrape's, an operator's."""

# The subscriptions with the most unfinished deliveries, for operators: an on-demand scan of the
# unfinished rows, never a metrics label per subscription.
TOP_BACKLOGS = """
SELECT s.id, s.customer_id, s.url, s.is_active, s.failure_count, s.rate_limit_per_second, s.ordered,
       count(*) FILTER (WHERE d.status = 'pending'), count(*) FILTER (WHERE d.status = 'held'),
       count(*) FILTER (WHERE d.status = 'in_flight'), count(*) FILTER (WHERE d.status = 'parked'),
       min(d.next_attempt_at) FILTER (WHERE d.status IN ('pending', 'held'))
FROM deliveries AS d JOIN subscriptions AS s ON s.id = d.subscription_id
WHERE d.status IN ('pending', 'held', 'in_flight', 'parked')
GROUP BY s.id ORDER BY count(*) DESC, s.id LIMIT ?"""


_OF_CUSTOMER = (
    "FROM subscriptions AS s WHERE s.customer_id = c.id AND s.kind = 'webhook' AND s.deleted_at IS NULL"
)
CUSTOMER_SUMMARIES = f"""
SELECT c.id, c.name, c.created_at,
       (SELECT count(*) {_OF_CUSTOMER}),
       (SELECT count(*) {_OF_CUSTOMER} AND s.is_active AND s.failure_count > 0),
       (SELECT count(*) {_OF_CUSTOMER} AND NOT s.is_active),
       (SELECT count(*) FROM api_keys AS k WHERE k.customer_id = c.id AND k.revoked_at IS NULL)
FROM customers AS c WHERE c.id > ? ORDER BY c.id LIMIT ? OFFSET ?"""
"""Customers in id order, each with its live webhook subscriptions (all, failing, disabled) and its
keys still in force: index lookups per customer on a page, not a scan of the subscriptions."""

TROUBLED_SUBSCRIPTIONS = (
    f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE kind = 'webhook' AND deleted_at IS NULL"
    " AND (NOT is_active OR failure_count > 0) AND id > ? ORDER BY id LIMIT ? OFFSET ?"
)
"""Every customer's disabled or failing live subscriptions, for the operator: a scan of the
subscriptions table (no index serves "not healthy"), which is small beside the deliveries."""


class SharedReads:
    """Lookups, lists and logs, on the primitives a backend gives: :meth:`_read_one` and
    :meth:`_read_all` for lookups by key, :meth:`_scan` for anything that may visit many rows (in
    ``turn``, the customer's, so one customer's reads cannot hold up another's)."""

    _rows: Rows
    _BUCKET: str
    """SQL for an attempt's bucket: the whole ``bucket_s`` (second ``?``) since ``since`` (first ``?``)
    in ``a.started_at``, as the backend does arithmetic on its stored times."""
    _BY_CALL: str
    """SQL after ``FROM call_callbacks`` that makes the planner use call_callbacks_by_call, if needed."""

    async def _read_one(self, sql: str, params: Sequence[Any]) -> Any | None:
        raise NotImplementedError

    async def _read_all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    async def _scan(self, turn: str, sql: str, params: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    async def get_api_key(self, key_hash: str) -> ApiKey | None:
        row = await self._read_one(f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,))
        return None if row is None else self._rows.api_key(row)

    async def list_api_keys(self, customer_id: str) -> list[ApiKey]:
        rows = await self._read_all(
            f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE customer_id = ? ORDER BY id", (customer_id,)
        )
        return [self._rows.api_key(row) for row in rows]

    async def dashboard_session_ended(self, session_id: str) -> bool:
        found = await self._read_one(
            "SELECT 1 FROM dashboard_session_ends WHERE session_id = ?", (session_id,)
        )
        return found is not None

    async def list_customers(self, page: PageRequest) -> Page[CustomerSummary]:
        if page.cursor and not is_customer_id(page.cursor):
            raise ValueError(NOT_OUR_CURSOR)
        rows = await self._paged(CUSTOMER_SUMMARIES, page.cursor, page)
        items = [self._rows.customer_summary(row) for row in rows[: page.limit]]
        return Page(items, _next_cursor([i.customer.id for i in items], len(rows), page.limit))

    async def troubled_subscriptions(self, page: PageRequest) -> Page[Subscription]:
        after = decode_cursor(page.cursor, "sub") if page.cursor else None
        rows = await self._paged(TROUBLED_SUBSCRIPTIONS, after, page)
        items = [self._rows.subscription(row) for row in rows[: page.limit]]
        return Page(items, _next_cursor([i.id for i in items], len(rows), page.limit))

    async def _paged(self, sql: str, after: str | None, page: PageRequest) -> list[Any]:
        """An operator's id-ordered list: ``limit + 1`` rows after the id ``after`` (else ``offset``)."""
        offset = 0 if after else page.offset
        return await self._scan(OPERATOR, sql, (after or "", page.limit + 1, offset))

    async def get_source(self, source_id: str) -> Source | None:
        row = await self._read_one(f"SELECT {SOURCE_COLUMNS} FROM sources WHERE id = ?", (source_id,))
        return None if row is None else self._rows.source(row)

    async def get_customer(self, customer_id: str) -> Customer | None:
        row = await self._read_one(f"SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = ?", (customer_id,))
        return None if row is None else self._rows.customer(row)

    async def get_subscription(self, customer_id: str | None, subscription_id: str) -> Subscription | None:
        row = await self._read_one(
            f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ? AND {_ANYONES} AND kind = 'webhook'"
            " AND deleted_at IS NULL",
            (subscription_id, customer_id),
        )
        return None if row is None else self._rows.subscription(row)

    async def _find_identical(self, subscription: Subscription) -> Subscription | None:
        """The live subscription with this one's customer, url and set of events, if any."""
        sub = subscription
        params = (sub.customer_id, sub.url, events_key(sub.events))
        row = await self._read_one(_live_subscriptions("url = ? AND events_key = ?"), params)
        return None if row is None else self._rows.subscription(row)

    async def list_subscriptions(
        self, customer_id: str, page: PageRequest, state: SubscriptionState | None = None
    ) -> Page[Subscription]:
        after = decode_cursor(page.cursor, "sub") if page.cursor else ""
        offset = 0 if page.cursor else page.offset
        condition = f"id > ? AND kind = 'webhook' AND {_IN_STATE[state]}"
        rows = await self._scan(
            customer_id,
            _live_subscriptions(condition, " ORDER BY id LIMIT ? OFFSET ?"),
            (customer_id, after, page.limit + 1, offset),
        )
        items = [self._rows.subscription(row) for row in rows[: page.limit]]
        next_cursor = encode_cursor(items[-1].id) if len(rows) > page.limit else None
        return Page(items, next_cursor)

    async def list_deliveries(
        self, customer_id: str, subscription_id: str, page: PageRequest, status: DeliveryStatus | None = None
    ) -> Page[Delivery]:
        where, params = "customer_id = ? AND subscription_id = ?", [customer_id, subscription_id]
        if status is not None:
            where, params = where + " AND status = ?", [*params, status.value]
        rows = await self._read_log(customer_id, "deliveries", DELIVERY_COLUMNS, where, params, page)
        return log_page([self._rows.delivery(row) for row in rows], page.limit)

    async def get_delivery(self, customer_id: str | None, delivery_id: str) -> DeliveryDetail | None:
        row = await self._read_one(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ? AND {_ANYONES}",
            (delivery_id, customer_id),
        )
        if row is None:
            return None
        attempts = await self._read_all(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ? ORDER BY id", (delivery_id,)
        )
        return DeliveryDetail(self._rows.delivery(row), [self._rows.attempt(a) for a in attempts])

    async def failed_delivery_ids(
        self, customer_id: str, subscription_id: str, since: datetime, until: datetime, limit: int
    ) -> list[str]:
        rows = await self._scan(
            customer_id,
            "SELECT id FROM deliveries WHERE customer_id = ? AND subscription_id = ? AND status = 'failed'"
            " AND created_at >= ? AND created_at <= ? ORDER BY created_at LIMIT ?",
            (customer_id, subscription_id, self._rows.stored(since), self._rows.stored(until), limit),
        )
        return [row[0] for row in rows]

    async def list_attempts(self, customer_id: str, delivery_ids: Sequence[str]) -> dict[str, list[Attempt]]:
        if not delivery_ids:
            return {}
        marks = ", ".join("?" for _ in delivery_ids)
        rows = await self._read_all(
            f"SELECT {_ATTEMPTS_OF}, a.delivery_id FROM attempts AS a"
            " JOIN deliveries AS d ON d.id = a.delivery_id"
            f" WHERE d.customer_id = ? AND a.delivery_id IN ({marks}) ORDER BY a.id",
            (customer_id, *delivery_ids),
        )
        found: dict[str, list[Attempt]] = {}
        for row in rows:
            found.setdefault(row[7], []).append(self._rows.attempt(row))
        return found

    async def subscription_activity(self, customer_id: str, since: datetime, bucket_s: int) -> Activity:
        start = self._rows.stored(since)
        tallies = await self._scan(
            customer_id,
            f"SELECT a.subscription_id, {self._BUCKET}, count(*),"
            f" sum(CASE WHEN a.succeeded THEN 1 ELSE 0 END){_WINDOW} GROUP BY 1, 2",
            (start, bucket_s, customer_id, start),
        )
        last = await self._scan(customer_id, _LAST_ATTEMPTS, (start, customer_id))
        return Activity(
            [AttemptTally(row[0], int(row[1]), row[2], int(row[3])) for row in tallies],
            {row[7]: self._rows.attempt(row) for row in last},
        )

    async def top_backlogs(self, limit: int) -> list[Backlog]:
        rows = await self._scan(OPERATOR, TOP_BACKLOGS, (limit,))
        return [self._rows.backlog(row) for row in rows]

    async def list_events(self, customer_id: str, page: PageRequest, type: str | None = None) -> Page[Event]:
        where, params = "customer_id = ?", [customer_id]
        if type is not None:
            where, params = where + " AND type = ?", [*params, type]
        rows = await self._read_log(customer_id, "events", EVENT_COLUMNS, where, params, page)
        return log_page([self._rows.event(row) for row in rows], page.limit)

    async def get_event(self, customer_id: str | None, event_id: str) -> Event | None:
        row = await self._read_one(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ? AND customer_id = coalesce(?, customer_id)",
            (event_id, customer_id),
        )
        return None if row is None else self._rows.event(row)

    async def get_callback_secret(self, customer_id: str) -> CallbackSecret | None:
        row = await self._read_one(
            f"SELECT {CALLBACK_SECRET_COLUMNS} FROM customers WHERE id = ?", (customer_id,)
        )
        return self._rows.callback_secret(row)

    async def list_calls(self, customer_id: str, page: PageRequest) -> Page[Call]:
        where, params = "customer_id = ?", list[Any]([customer_id])
        if page.cursor:
            moment, carrier, call_id = decode_call_cursor(page.cursor)
            where += " AND (updated_at, carrier, call_id) < (?, ?, ?)"
            params += [self._rows.cursor_moment(moment), carrier, call_id]
        offset = 0 if page.cursor else page.offset
        rows = await self._scan(
            customer_id,
            f"SELECT {CALL_COLUMNS} FROM calls WHERE {where}{_NEWEST_CALLS}",
            [*params, page.limit + 1, offset],
        )
        shown = rows[: page.limit]
        counts = await self._callback_counts(customer_id, [(row[0], row[1]) for row in shown])
        calls = [self._rows.call((*row, *counts.get((row[0], row[1]), (0, 0)))) for row in shown]
        next_cursor = encode_call_cursor(calls[-1]) if len(rows) > page.limit else None
        return Page(calls, next_cursor)

    async def _callback_counts(
        self, customer_id: str, calls: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """Each of ``calls``' callbacks and the distinct events they produced, by (carrier, call id)."""
        if not calls:
            return {}
        sql = " UNION ALL ".join([CALLBACK_COUNT.format(by_call=self._BY_CALL)] * len(calls))
        params = [value for carrier, call_id in calls for value in (customer_id, carrier, call_id)]
        rows = await self._read_all(sql, params)
        return {(row[0], row[1]): (row[2], row[3]) for row in rows}

    async def get_call(self, customer_id: str, carrier: Carrier, call_id: str) -> CallTimeline | None:
        key = (customer_id, carrier.value, call_id)
        row = await self._read_one(f"SELECT {CALL_COLUMNS} FROM calls WHERE {_OF_CALL}", key)
        if row is None:
            return None
        found = await self._read_all(CALLBACKS.format(by_call=self._BY_CALL), key)
        callbacks = tuple(self._rows.call_callback(callback) for callback in found)
        event_ids = list(dict.fromkeys(c.event_id for c in callbacks if c.event_id is not None))
        events = tuple(await self._events(customer_id, event_ids))
        deliveries = await self.event_deliveries(customer_id, [e.id for e in events])
        call = self._rows.call((*row, len(callbacks), len(event_ids)))
        return CallTimeline(call, callbacks, events, deliveries)

    async def _events(self, customer_id: str, event_ids: Sequence[str]) -> list[Event]:
        """Those of ``event_ids`` that are ``customer_id``'s and still stored, oldest first."""
        if not event_ids:
            return []
        marks = ", ".join("?" for _ in event_ids)
        rows = await self._read_all(EVENTS_BY_ID.format(marks=marks), (*event_ids, customer_id))
        return sorted((self._rows.event(row) for row in rows), key=lambda e: (e.created_at, e.id))

    async def event_deliveries(
        self, customer_id: str, event_ids: Sequence[str]
    ) -> dict[str, list[EventDelivery]]:
        if not event_ids:
            return {}
        marks = ", ".join("?" for _ in event_ids)
        rows = await self._read_all(EVENT_DELIVERIES.format(marks=marks), (*event_ids, customer_id))
        found: dict[str, list[EventDelivery]] = {}
        for row in rows:
            delivery = self._rows.event_delivery(row)
            found.setdefault(delivery.delivery.event_id, []).append(delivery)
        return found

    async def _read_log(
        self, customer_id: str, table: str, columns: str, where: str, params: list[Any], page: PageRequest
    ) -> list[Any]:
        """``customer_id``'s log, newest first; keyset on (created_at, id) after a cursor, else ``offset``."""
        if page.cursor:
            created, item_id = decode_log_cursor(page.cursor, _ID_PREFIX[table])
            where += " AND (created_at, id) < (?, ?)"
            params = [*params, self._rows.cursor_moment(created), item_id]
        offset = 0 if page.cursor else page.offset
        return await self._scan(
            customer_id,
            f"SELECT {columns} FROM {table} WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            [*params, page.limit + 1, offset],
        )
