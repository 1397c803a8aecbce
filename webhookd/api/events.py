"""``POST /api/v1/events``: the platform publishes its own events."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from webhookd.api.auth import authenticate
from webhookd.exceptions import ApiError
from webhookd.models import ApiKey, Event, NewEvent, Scope
from webhookd.web import JSONResponse, read_json_object, services

EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def event_json(event: Event) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(event.payload)
    body["idempotency_key"] = event.idempotency_key
    return body


def _customer_for(key: ApiKey, requested: Any) -> str:
    if requested is None or requested == key.customer_id:
        return key.customer_id
    if not isinstance(requested, str) or not requested:
        raise ApiError("customer_id must be a string", code="invalid_customer")
    if Scope.ADMIN not in key.scopes:
        raise ApiError("only an admin key may publish for another customer", status=403, code="forbidden")
    return requested


def _new_event(key: ApiKey, body: dict[str, Any]) -> NewEvent:
    event_type, data = body.get("type"), body.get("data", {})
    if not isinstance(event_type, str) or not EVENT_TYPE_PATTERN.match(event_type):
        raise ApiError(
            "type must be a dotted lowercase event type such as call.completed",
            code="invalid_event_type",
        )
    if not isinstance(data, dict):
        raise ApiError("data must be a JSON object", code="invalid_data")
    idempotency_key = body.get("idempotency_key")
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH
    ):
        raise ApiError(
            f"idempotency_key must be a string of 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
            code="invalid_idempotency_key",
        )
    customer_id = _customer_for(key, body.get("customer_id"))
    return NewEvent(customer_id, event_type, data, idempotency_key)


async def publish_event(request: Request) -> Response:
    key = await authenticate(request, Scope.PUBLISH_EVENTS)
    svc = services(request)
    event = _new_event(key, await read_json_object(request, svc.settings.max_body_bytes))
    if event.customer_id != key.customer_id:
        await svc.store.ensure_customer(event.customer_id)
    result = await svc.store.publish(event, delay_s=svc.settings.retry_schedule_s[0])
    return JSONResponse(event_json(result.event), status_code=202 if result.created else 200)
