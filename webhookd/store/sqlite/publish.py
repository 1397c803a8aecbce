"""The SQLite side of publishing: events, their fan-out to deliveries, and carrier callbacks.

Every function here runs inside a transaction of the group-commit writer. ``publish_batches`` is
the writer's combined form of ``publish_event``: a batch of plain publishes costs a handful of
statements, not two per event.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3

import orjson

from webhookd.exceptions import StoreError
from webhookd.models import Event, NewEvent, PublishResult
from webhookd.store.base import CallbackOutcome, CallbackReceipt, Decide, chunks
from webhookd.store.shared import EVENT_COLUMNS, waiting_status
from webhookd.store.sqlite.epoch import ROWS, to_epoch

# A delivery's id is its event's: 'dlv_', the event id's millisecond time, and 16 random hex digits
# (hex is a subset of the Crockford alphabet). Ids in time order grow the id index at its right
# edge instead of dirtying a random page per delivery in every commit.
_DELIVERY_ID = "'dlv_' || substr({event_id}, 5, 10) || hex(randomblob(8))"
_DELIVERY_COLUMNS = (
    "id, event_id, subscription_id, customer_id, status, attempts, next_attempt_at, created_at, updated_at,"
    " ordering_key"
)
_WAITING = waiting_status("s.")
_LIVE = "s.is_active = 1 AND s.deleted_at IS NULL"

_FOR_ONE_EVENT = f"""
INSERT INTO deliveries ({_DELIVERY_COLUMNS})
SELECT {_DELIVERY_ID.format(event_id=":event_id")}, :event_id, s.id, s.customer_id, {_WAITING}, 0,
       :due, :now, :now, :ordering_key
"""

_FAN_OUT = f"""{_FOR_ONE_EVENT}
FROM subscription_event_types AS t JOIN subscriptions AS s ON s.id = t.subscription_id
WHERE t.customer_id = :customer_id AND t.event_type = :type AND {_LIVE}
"""

_FAN_OUT_ONE = f"""{_FOR_ONE_EVENT}
FROM subscriptions AS s WHERE s.id = :sub AND s.customer_id = :customer_id AND {_LIVE}
"""

_FAN_OUT_CALLBACK = f"""{_FOR_ONE_EVENT}
FROM subscriptions AS s
WHERE s.customer_id = :customer_id AND s.url = :url AND s.events_key = '' AND s.kind = 'callback' AND {_LIVE}
"""

# Every event stored by one multi-row insert, whose rowids (seq) are consecutive, in one statement.
_FAN_OUT_RANGE = f"""
INSERT INTO deliveries ({_DELIVERY_COLUMNS})
SELECT {_DELIVERY_ID.format(event_id="e.id")}, e.id, s.id, s.customer_id, {_WAITING}, 0,
       e.created_at + :delay, e.created_at, e.created_at, NULL
FROM events AS e
JOIN subscription_event_types AS t ON t.customer_id = e.customer_id AND t.event_type = e.type
JOIN subscriptions AS s ON s.id = t.subscription_id
WHERE e.seq BETWEEN :first AND :last AND {_LIVE}
"""

_INSERT_EVENT = """
INSERT INTO events (id, customer_id, type, idempotency_key, payload, created_at, callback_url,
                    ordering_key, traceparent)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (customer_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
"""

ROWS_PER_INSERT = 100
"""Plain events per multi-row insert: 600 parameters, below SQLite's limits."""


def publish_batches(
    conn: sqlite3.Connection, batches: list[tuple[list[NewEvent], float]]
) -> list[list[PublishResult]]:
    """The writer's combined form of publishing: each item is one call's ``(events, delay_s)``, and
    gets its events' results, in order. A batch is one item, so the writer retries it alone, whole,
    when the combined call fails: it is stored all or nothing."""
    requests = [(event, delay_s) for events, delay_s in batches for event in events]
    results = iter(publish_events(conn, requests))
    return [list(itertools.islice(results, len(events))) for events, _ in batches]


def publish_events(conn: sqlite3.Connection, requests: list[tuple[NewEvent, float]]) -> list[PublishResult]:
    """Many ``(event, delay_s)`` publishes, each with :func:`publish_event`'s result, in order.

    Plain events (no idempotency key, callback_url or single target: nothing to look up first)
    are grouped by customer, type and ``delay_s``; each group is stored by one multi-row insert
    and fanned out by one more statement. The others go one by one.
    """
    results: dict[int, PublishResult] = {}
    plain: dict[tuple[str, str, float], list[tuple[int, NewEvent]]] = {}
    for index, (event, delay_s) in enumerate(requests):
        if _is_plain(event):
            plain.setdefault((event.customer_id, event.type, delay_s), []).append((index, event))
        else:
            results[index] = publish_event(conn, event, delay_s)
    for (_, _, delay_s), indexed in plain.items():
        for chunk in chunks(indexed, ROWS_PER_INSERT):
            published = _publish_plain(conn, [event for _, event in chunk], delay_s)
            results.update(zip((index for index, _ in chunk), published, strict=True))
    return [results[index] for index in range(len(requests))]


def _is_plain(event: NewEvent) -> bool:
    return (
        event.idempotency_key is None
        and event.callback_url is None
        and event.only_subscription_id is None
        and event.ordering_key is None
    )


def _publish_plain(conn: sqlite3.Connection, events: list[NewEvent], delay_s: float) -> list[PublishResult]:
    """Events of one customer and type: they have the same subscribers, so each gets an equal
    share of the fan-out's rows, and no statement is needed to count them first."""
    payloads = [orjson.dumps(event.envelope()) for event in events]
    params = [
        value
        for event, payload in zip(events, payloads, strict=True)
        for value in (
            event.id,
            event.customer_id,
            event.type,
            payload,
            to_epoch(event.created_at),
            event.traceparent,
        )
    ]
    last = conn.execute(_insert_plain(len(events)), params).lastrowid
    assert last is not None
    fanned = conn.execute(_FAN_OUT_RANGE, {"delay": delay_s, "first": last - len(events) + 1, "last": last})
    each, uneven = divmod(fanned.rowcount, len(events))
    if uneven:
        raise StoreError(f"{fanned.rowcount} deliveries for {len(events)} events of one customer and type")
    return [
        PublishResult(
            Event(event.id, event.customer_id, event.type, None, payload, event.created_at, None),
            created=True,
            deliveries=each,
        )
        for event, payload in zip(events, payloads, strict=True)
    ]


@functools.lru_cache(maxsize=ROWS_PER_INSERT)
def _insert_plain(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO events (id, customer_id, type, payload, created_at, traceparent) VALUES {values}"


def publish_event(conn: sqlite3.Connection, event: NewEvent, delay_s: float) -> PublishResult:
    """Store the event and its deliveries; a repeated idempotency key stores nothing."""
    payload, created = orjson.dumps(event.envelope()), to_epoch(event.created_at)
    e = event
    inserted = conn.execute(
        _INSERT_EVENT,
        (
            e.id,
            e.customer_id,
            e.type,
            e.idempotency_key,
            payload,
            created,
            e.callback_url,
            e.ordering_key,
            e.traceparent,
        ),
    ).rowcount
    if not inserted:
        return PublishResult(_existing_event(conn, event), created=False, deliveries=0)
    params = {
        "event_id": e.id,
        "customer_id": e.customer_id,
        "type": e.type,
        "due": created + delay_s,
        "now": created,
        "sub": e.only_subscription_id,
        "url": e.callback_url,
        "ordering_key": e.ordering_key,
    }
    deliveries = conn.execute(_FAN_OUT if e.only_subscription_id is None else _FAN_OUT_ONE, params).rowcount
    if e.callback_url is not None:
        deliveries += _fan_out_callback(conn, params)
    stored = Event(
        e.id, e.customer_id, e.type, e.idempotency_key, payload, e.created_at, e.callback_url, e.ordering_key
    )
    return PublishResult(stored, created=True, deliveries=deliveries)


def _existing_event(conn: sqlite3.Connection, event: NewEvent) -> Event:
    row = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE customer_id = ? AND idempotency_key = ?",
        (event.customer_id, event.idempotency_key),
    ).fetchone()
    return ROWS.event(row)


def _fan_out_callback(conn: sqlite3.Connection, params: dict[str, object]) -> int:
    """A delivery to the event's ``callback_url``, through a hidden 'callback' subscription so it
    gets the same retries, health tracking and log as any other."""
    conn.execute(
        "INSERT INTO subscriptions (id, customer_id, url, events_key, secret, is_active, created_at,"
        " updated_at, kind) VALUES ('sub_' || upper(hex(randomblob(13))), :customer_id, :url, '', x'', 1,"
        " :now, :now, 'callback')"
        " ON CONFLICT (customer_id, url, events_key) WHERE deleted_at IS NULL DO NOTHING",
        params,
    )
    return conn.execute(_FAN_OUT_CALLBACK, params).rowcount


def record_callback(
    conn: sqlite3.Connection, receipt: CallbackReceipt, decide: Decide, delay_s: float, received: float
) -> CallbackOutcome:
    """Dedupe the callback, advance its call's state, and publish what that emits: one transaction."""
    r = receipt
    fresh = conn.execute(
        "INSERT INTO call_callbacks (customer_id, idempotency_key, carrier, call_id, status_raw, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (r.customer_id, r.idempotency_key, r.carrier, r.call_id, r.status_raw, received),
    ).rowcount
    if not fresh:
        return CallbackOutcome(duplicate=True)
    key = (r.customer_id, r.carrier, r.call_id)
    row = conn.execute(
        "SELECT state FROM calls WHERE customer_id = ? AND carrier = ? AND call_id = ?", key
    ).fetchone()
    state, event = decide(None if row is None else orjson.loads(row[0]))
    conn.execute(
        "INSERT INTO calls (customer_id, carrier, call_id, state, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        (*key, orjson.dumps(state), received),
    )
    if event is None:
        return CallbackOutcome(duplicate=False)
    published = publish_event(conn, event, delay_s)
    conn.execute(
        "UPDATE call_callbacks SET event_id = ? WHERE customer_id = ? AND idempotency_key = ?",
        (published.event.id, r.customer_id, r.idempotency_key),
    )
    return CallbackOutcome(duplicate=False, published=published)
