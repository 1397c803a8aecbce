"""PostgreSQL publishing: an event and its fan-out, and carrier callbacks moving a call on.

Every function here runs inside a transaction. Fan-out reads each subscription's health under a
``FOR SHARE`` lock (taken in id order), so it cannot create a pending delivery for a subscription
whose failure another transaction is counting: it waits, then sees the subscription failing.
``publish_batches`` is the group-commit writer's combined form of ``publish_event``: a batch of
publishes is one statement, not two or three per event.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import orjson

from webhookd.exceptions import StoreError
from webhookd.models import Event, NewEvent, PublishResult
from webhookd.store.base import CallbackOutcome, CallbackReceipt, Decide
from webhookd.store.postgres.db import Connection, count_rows
from webhookd.store.postgres.reads import ROWS
from webhookd.store.shared import EVENT_COLUMNS, waiting_status


# A delivery's id is its event's: 'dlv_', the event id's millisecond time, and 16 random hex digits
# (hex is a subset of the Crockford alphabet). Ids in time order grow the id index at its right edge
# instead of dirtying a random page per delivery. $1 is the event id in every one-event fan-out.
def new_delivery_id(event_id: str) -> str:
    """SQL for a new delivery id of the event whose id is the SQL ``event_id``."""
    random_hex = "upper(right(translate(gen_random_uuid()::text, '-', ''), 16))"
    return f"'dlv_' || substr({event_id}, 5, 10) || {random_hex}"


NEW_DELIVERY_ID = new_delivery_id("$1")
NEW_SUBSCRIPTION_ID = "'sub_' || upper(left(translate(gen_random_uuid()::text, '-', ''), 26))"

_WAITING_S = waiting_status("s.")
_WAITING = waiting_status("")

_INSERT_EVENT = """
INSERT INTO events (id, customer_id, type, idempotency_key, payload, created_at, callback_url,
                    ordering_key, traceparent)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (customer_id, idempotency_key) DO NOTHING
"""

_FAN_OUT = f"""
INSERT INTO deliveries (id, event_id, subscription_id, customer_id, status, attempts,
                        next_attempt_at, created_at, updated_at, ordering_key)
SELECT {NEW_DELIVERY_ID}, $1, s.id, s.customer_id,
       {_WAITING_S}, 0, $2, $3, $3, $6::text
FROM subscription_event_types AS t JOIN subscriptions AS s ON s.id = t.subscription_id
WHERE t.customer_id = $4 AND t.event_type = $5 AND s.is_active AND s.deleted_at IS NULL
ORDER BY s.id FOR SHARE OF s
"""

_FAN_OUT_ONE = f"""
INSERT INTO deliveries (id, event_id, subscription_id, customer_id, status, attempts,
                        next_attempt_at, created_at, updated_at, ordering_key)
SELECT {NEW_DELIVERY_ID}, $1, id, customer_id,
       {_WAITING}, 0, $2, $3, $3, $6::text
FROM subscriptions WHERE id = $5 AND customer_id = $4 AND is_active AND deleted_at IS NULL
FOR SHARE
"""

# Many events in one statement: the insert stores each event whose idempotency key is new (a
# repeated key stores nothing, as alone), the fan-out gives each stored event its deliveries, and
# the answer is each stored event's id with its count of deliveries. Subscriptions are share-locked
# in id order, as the one-event fan-out does; within a subscription the deliveries are stored in the
# events' order ($9, the due times, is in that order too), which sets the order of an ordering key.
_STORE_EVENTS = f"""
WITH stored AS (
  INSERT INTO events (id, customer_id, type, idempotency_key, payload, created_at, ordering_key,
                      traceparent)
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::timestamptz[],
                       $7::text[], $8::text[])
  ON CONFLICT (customer_id, idempotency_key) DO NOTHING
  RETURNING id, customer_id, type, created_at, ordering_key
), fanned AS (
  INSERT INTO deliveries (id, event_id, subscription_id, customer_id, status, attempts,
                          next_attempt_at, created_at, updated_at, ordering_key)
  SELECT {new_delivery_id("e.id")}, e.id, s.id, s.customer_id,
         {_WAITING_S}, 0, d.due, e.created_at, e.created_at, e.ordering_key
  FROM stored AS e
  JOIN unnest($1::text[], $9::timestamptz[]) WITH ORDINALITY AS d (id, due, n) ON d.id = e.id
  JOIN subscription_event_types AS t ON t.customer_id = e.customer_id AND t.event_type = e.type
  JOIN subscriptions AS s ON s.id = t.subscription_id
  WHERE s.is_active AND s.deleted_at IS NULL
  ORDER BY s.id, d.n FOR SHARE OF s
  RETURNING event_id
)
SELECT e.id, (SELECT count(*) FROM fanned WHERE fanned.event_id = e.id) FROM stored AS e
"""

# A batch fanning out in several statements share-locks every subscription it may fan out to
# first, in id order: each statement's own lock is then one it holds already, and the batch never
# takes a lower id after a higher one (the order the outbox's writers lock in).
_LOCK_SUBSCRIPTIONS = """
SELECT s.id FROM subscriptions AS s
WHERE s.id IN (SELECT t.subscription_id
               FROM unnest($1::text[], $2::text[]) AS e (customer_id, type)
               JOIN subscription_event_types AS t
                 ON t.customer_id = e.customer_id AND t.event_type = e.type)
   OR s.id = ANY($3::text[])
   OR (s.kind = 'callback' AND (s.customer_id, s.url) IN (SELECT * FROM unnest($4::text[], $5::text[])))
ORDER BY s.id FOR SHARE
"""

_CALLBACK_SUBSCRIPTION = f"""
INSERT INTO subscriptions (id, customer_id, url, events_key, secret, is_active, created_at,
                           updated_at, kind)
VALUES ({NEW_SUBSCRIPTION_ID}, $1, $2, '', '\\x'::bytea, true, $3, $3, 'callback')
ON CONFLICT (customer_id, url, events_key) WHERE deleted_at IS NULL DO NOTHING
"""

_FAN_OUT_CALLBACK = f"""
INSERT INTO deliveries (id, event_id, subscription_id, customer_id, status, attempts,
                        next_attempt_at, created_at, updated_at, ordering_key)
SELECT {NEW_DELIVERY_ID}, $1, id, customer_id,
       {_WAITING}, 0, $2, $3, $3, $6::text
FROM subscriptions WHERE customer_id = $4 AND url = $5 AND events_key = '' AND kind = 'callback'
  AND is_active AND deleted_at IS NULL
FOR SHARE
"""


async def publish_batches(
    conn: Connection, batches: list[tuple[list[NewEvent], float]]
) -> list[list[PublishResult]]:
    """The writer's combined form of publishing: each item is one call's ``(events, delay_s)``, and
    gets its events' results, in order. A batch is one item, so the writer retries it alone, whole,
    when the combined call fails: it is stored all or nothing."""
    requests = [(event, delay_s) for events, delay_s in batches for event in events]
    results = iter(await publish_events(conn, requests))
    return [list(itertools.islice(results, len(events))) for events, _ in batches]


async def publish_events(conn: Connection, requests: list[tuple[NewEvent, float]]) -> list[PublishResult]:
    """Many ``(event, delay_s)`` publishes, each with :func:`publish_event`'s result, in order.

    Events fanned out by event type (no single target, no callback_url) are stored together; the
    others go one by one. Both in order of idempotency key, so that API nodes storing batches at
    once take the key index's entries in one order."""
    results: dict[int, PublishResult] = {}
    together: list[tuple[int, NewEvent, float]] = []
    alone: list[tuple[int, NewEvent, float]] = []
    for index, (event, delay_s) in enumerate(requests):
        fans_out_by_type = event.callback_url is None and event.only_subscription_id is None
        (together if fans_out_by_type else alone).append((index, event, delay_s))
    if len(alone) + bool(together) > 1:
        await conn.execute(_LOCK_SUBSCRIPTIONS, *_lock_parameters([event for event, _ in requests]))
    for index, event, delay_s in sorted(alone, key=_key_order):
        results[index] = await publish_event(conn, event, delay_s)
    if together:
        together.sort(key=_key_order)
        published = await _publish_together(conn, [(event, delay_s) for _, event, delay_s in together])
        results.update(zip((index for index, _, _ in together), published, strict=True))
    return [results[index] for index in range(len(requests))]


def _key_order(item: tuple[int, NewEvent, float]) -> tuple[str, str]:
    return item[1].customer_id, item[1].idempotency_key or ""


def _lock_parameters(events: list[NewEvent]) -> list[list[str]]:
    """The arrays of ``_LOCK_SUBSCRIPTIONS``: each event's customer and type, its single target,
    and its callback_url."""
    targets = [event.only_subscription_id for event in events if event.only_subscription_id is not None]
    callbacks = [
        (event.customer_id, event.callback_url) for event in events if event.callback_url is not None
    ]
    return [
        [event.customer_id for event in events],
        [event.type for event in events],
        targets,
        [customer_id for customer_id, _ in callbacks],
        [url for _, url in callbacks],
    ]


async def _publish_together(conn: Connection, requests: list[tuple[NewEvent, float]]) -> list[PublishResult]:
    events = [event for event, _ in requests]
    payloads = [orjson.dumps(event.envelope()) for event in events]
    rows = await conn.fetch(
        _STORE_EVENTS,
        *_columns(events, "id", "customer_id", "type", "idempotency_key"),
        payloads,
        *_columns(events, "created_at", "ordering_key", "traceparent"),
        [event.created_at + timedelta(seconds=delay_s) for event, delay_s in requests],
    )
    counts: dict[str, int] = {row[0]: row[1] for row in rows}
    results = []
    for e, payload in zip(events, payloads, strict=True):
        if e.id not in counts:
            results.append(PublishResult(await _existing_event(conn, e), created=False, deliveries=0))
            continue
        event = Event(
            e.id, e.customer_id, e.type, e.idempotency_key, payload, e.created_at, None, e.ordering_key
        )
        results.append(PublishResult(event, created=True, deliveries=counts[e.id]))
    return results


def _columns(events: list[NewEvent], *names: str) -> list[list[object]]:
    """One array parameter per named field of ``events``, for ``unnest``."""
    return [[getattr(event, name) for event in events] for name in names]


async def publish_event(conn: Connection, event: NewEvent, delay_s: float) -> PublishResult:
    """Store the event and its deliveries; a repeated idempotency key stores nothing."""
    payload = orjson.dumps(event.envelope())
    e = event
    inserted = await conn.execute(
        _INSERT_EVENT,
        *(
            e.id,
            e.customer_id,
            e.type,
            e.idempotency_key,
            payload,
            e.created_at,
            e.callback_url,
            e.ordering_key,
            e.traceparent,
        ),
    )
    if not count_rows(inserted):
        return PublishResult(await _existing_event(conn, event), created=False, deliveries=0)
    due = event.created_at + timedelta(seconds=delay_s)
    if event.only_subscription_id is None:
        fanned = await conn.execute(_FAN_OUT, e.id, due, e.created_at, e.customer_id, e.type, e.ordering_key)
    else:
        fanned = await conn.execute(
            _FAN_OUT_ONE, e.id, due, e.created_at, e.customer_id, e.only_subscription_id, e.ordering_key
        )
    deliveries = count_rows(fanned)
    if event.callback_url is not None:
        deliveries += await fan_out_callback(conn, event, event.callback_url, due)
    stored = Event(
        e.id, e.customer_id, e.type, e.idempotency_key, payload, e.created_at, e.callback_url, e.ordering_key
    )
    return PublishResult(stored, created=True, deliveries=deliveries)


async def _existing_event(conn: Connection, event: NewEvent) -> Event:
    row = await conn.fetchrow(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE customer_id = $1 AND idempotency_key = $2",
        event.customer_id,
        event.idempotency_key,
    )
    if row is None:  # pruned between our insert and this read; vanishingly rare
        raise StoreError("the event changed concurrently; retry the request")
    return ROWS.event(row)


async def fan_out_callback(conn: Connection, event: NewEvent, url: str, due: datetime) -> int:
    """A delivery to the event's ``callback_url``, through a hidden 'callback' subscription so it
    gets the same retries, health tracking and log as any other."""
    await conn.execute(_CALLBACK_SUBSCRIPTION, event.customer_id, url, event.created_at)
    status = await conn.execute(
        _FAN_OUT_CALLBACK, event.id, due, event.created_at, event.customer_id, url, event.ordering_key
    )
    return count_rows(status)


async def record_callback(
    conn: Connection, receipt: CallbackReceipt, decide: Decide, delay_s: float, received: datetime
) -> CallbackOutcome:
    """Dedupe the callback, advance its call's state, and publish what that emits: one transaction.

    The call's row is inserted first if missing, so ``FOR UPDATE`` always has a row to lock: two
    callbacks of one call, in any processes, take turns."""
    r = receipt
    fresh = await conn.execute(
        "INSERT INTO call_callbacks (customer_id, idempotency_key, carrier, call_id, status_raw, received_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        *(r.customer_id, r.idempotency_key, r.carrier, r.call_id, r.status_raw, received),
    )
    if not count_rows(fresh):
        return CallbackOutcome(duplicate=True)
    event = await _advance_call(conn, (r.customer_id, r.carrier, r.call_id), decide, received)
    if event is None:
        return CallbackOutcome(duplicate=False)
    published = await publish_event(conn, event, delay_s)
    await conn.execute(
        "UPDATE call_callbacks SET event_id = $1 WHERE customer_id = $2 AND idempotency_key = $3",
        published.event.id,
        r.customer_id,
        r.idempotency_key,
    )
    return CallbackOutcome(duplicate=False, published=published)


async def _advance_call(
    conn: Connection, key: tuple[str, str, str], decide: Decide, received: datetime
) -> NewEvent | None:
    """Lock the call's row (inserted first if missing), run ``decide`` on its state, store the next
    state, and return the event ``decide`` emitted."""
    await conn.execute(
        "INSERT INTO calls (customer_id, carrier, call_id, state, updated_at) VALUES ($1, $2, $3, NULL, $4)"
        " ON CONFLICT DO NOTHING",
        *key,
        received,
    )
    stored: str | None = await conn.fetchval(
        "SELECT state::text FROM calls WHERE customer_id = $1 AND carrier = $2 AND call_id = $3 FOR UPDATE",
        *key,
    )
    state, event = decide(None if stored is None else orjson.loads(stored))
    await conn.execute(
        "INSERT INTO calls (customer_id, carrier, call_id, state, updated_at)"
        " VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (customer_id, carrier, call_id)"
        " DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        *key,
        orjson.dumps(state).decode(),
        received,
    )
    return event
