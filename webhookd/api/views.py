"""How domain records look as JSON in the API (the shapes ``schemas.py`` describes)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

from webhookd.ingest.callstate import CallState
from webhookd.models import (
    ApiKey,
    Attempt,
    Call,
    CallTimeline,
    CustomerSummary,
    Delivery,
    Event,
    EventDelivery,
    PublishResult,
    Subscription,
    isoformat,
)
from webhookd.store.base import Backlog, DeliveryDetail


def _time(value: Any) -> str | None:
    return None if value is None else isoformat(value)


def subscription_json(
    sub: Subscription, secret: str | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """``secret`` is shown when given (once, at create); ``headers`` (decrypted) likewise, as only
    the subscription's customer sees them."""
    body: dict[str, Any] = {
        "id": sub.id,
        "url": sub.url,
        "events": list(sub.events),
        "description": sub.description,
        "is_active": sub.is_active,
        "disabled_reason": None if sub.disabled_reason is None else sub.disabled_reason.value,
        "disabled_at": _time(sub.disabled_at),
        "failure_count": sub.failure_count,
        "rate_limit_per_second": sub.rate_limit_per_second,
        "ordered": sub.ordered,
        "signature_scheme": sub.signature_scheme.value,
        "public_key": sub.public_key,
        "created_at": isoformat(sub.created_at),
    }
    if headers is not None:
        body["headers"] = headers
    if secret is not None:
        body["secret"] = secret
    return body


def operator_subscription_json(sub: Subscription) -> dict[str, Any]:
    """A subscription as the operator sees it: whose it is, and its state."""
    return {**subscription_json(sub), "customer_id": sub.customer_id, "state": sub.state.value}


def api_key_json(key: ApiKey) -> dict[str, Any]:
    """A key's record: never the key itself, which is shown once when it is created."""
    return {
        "id": key.id,
        "customer_id": key.customer_id,
        "name": key.name,
        "scopes": sorted(key.scopes),
        "created_at": isoformat(key.created_at),
        "last_used_at": _time(key.last_used_at),
        "revoked_at": _time(key.revoked_at),
    }


def customer_json(summary: CustomerSummary) -> dict[str, Any]:
    customer = summary.customer
    return {
        "id": customer.id,
        "name": customer.name,
        "created_at": isoformat(customer.created_at),
        "subscriptions": summary.subscriptions,
        "failing": summary.failing,
        "disabled": summary.disabled,
        "keys": summary.keys,
    }


def event_json(event: Event) -> dict[str, Any]:
    """The stored body receivers get, plus what the publisher set beside it."""
    body: dict[str, Any] = orjson.loads(event.payload)
    body.update(_publisher_fields(event))
    return body


def _publisher_fields(event: Event) -> dict[str, Any]:
    return {
        "idempotency_key": event.idempotency_key,
        "callback_url": event.callback_url,
        "ordering_key": event.ordering_key,
    }


def event_body(event: Event) -> bytes:
    """``event_json(event)`` serialized: the publisher's fields spliced onto the stored payload (a
    JSON object), which saves parsing and serializing it again on every publish."""
    extra = orjson.dumps(_publisher_fields(event))
    return event.payload[:-1] + b"," + extra[1:]


def batch_body(results: Sequence[PublishResult]) -> bytes:
    """A batch publish's answer: per event, in order, its status (202 stored, 200 a repeat) and
    the event (:func:`event_body`, spliced in as it is)."""
    items = b",".join(
        b'{"status":%d,"event":%s}' % (202 if result.created else 200, event_body(result.event))
        for result in results
    )
    return b'{"data":[' + items + b"]}"


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "subscription_id": delivery.subscription_id,
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "next_attempt_at": _time(delivery.next_attempt_at),
        "created_at": isoformat(delivery.created_at),
        "updated_at": _time(delivery.updated_at),
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "delivered_at": _time(delivery.delivered_at),
    }


def _excerpt(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode()


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "attempt_no": attempt.attempt_no,
        "started_at": isoformat(attempt.started_at),
        "duration_ms": round(attempt.duration_s * 1000, 3),
        "status_code": attempt.status_code,
        "error": attempt.error,
        "response_excerpt": _excerpt(attempt.response_excerpt),
        "succeeded": attempt.succeeded,
    }


def delivery_detail_json(detail: DeliveryDetail) -> dict[str, Any]:
    return {**delivery_json(detail.delivery), "attempts_log": [attempt_json(a) for a in detail.attempts]}


def backlog_json(backlog: Backlog) -> dict[str, Any]:
    return {
        "subscription_id": backlog.subscription_id,
        "customer_id": backlog.customer_id,
        "url": backlog.url,
        "is_active": backlog.is_active,
        "failure_count": backlog.failure_count,
        "rate_limit_per_second": backlog.rate_limit_per_second,
        "ordered": backlog.ordered,
        "pending": backlog.pending,
        "held": backlog.held,
        "in_flight": backlog.in_flight,
        "parked": backlog.parked,
        "oldest_due_at": _time(backlog.oldest_due_at),
    }


def call_json(call: Call) -> dict[str, Any]:
    return {
        "id": call.ref,
        "carrier": call.carrier.value,
        "call_id": call.call_id,
        "state": CallState.from_json(call.state).status,
        "updated_at": isoformat(call.updated_at),
        "callback_count": call.callback_count,
        "event_count": call.event_count,
    }


def _went_to(sent: EventDelivery) -> dict[str, Any]:
    d = sent.delivery
    return {
        "id": d.id,
        "subscription_id": d.subscription_id,
        "url": sent.url,
        "status": d.status.value,
        "attempts": d.attempts,
        "last_status": d.last_status,
    }


def call_timeline_json(timeline: CallTimeline) -> dict[str, Any]:
    """The call, its callbacks as received, and each event they produced with where it went."""
    callbacks = [
        {
            "carrier": c.carrier.value,
            "status_raw": c.status_raw,
            "received_at": isoformat(c.received_at),
            "event_id": c.event_id,
        }
        for c in timeline.callbacks
    ]
    events = [
        {
            "id": e.id,
            "type": e.type,
            "created_at": isoformat(e.created_at),
            "payload": orjson.loads(e.payload),
            "deliveries": [_went_to(d) for d in timeline.deliveries.get(e.id, [])],
        }
        for e in timeline.events
    ]
    return {**call_json(timeline.call), "callbacks": callbacks, "events": events}
