"""Events: the platform publishes (``POST /events``, ``/events/batch``); customers read log and catalog."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from webhookd.actions import check_destination, valid_url
from webhookd.api.auth import authenticate
from webhookd.api.callbacks import callback_secret
from webhookd.api.openapi import operation, page_params
from webhookd.api.pagination import cursor_checked, page_request
from webhookd.api.schemas import PUBLISHED_TYPE
from webhookd.api.views import batch_body, event_body, event_json
from webhookd.exceptions import ApiError, RequestError
from webhookd.inputs import (
    EVENT_TYPE_RULE,
    MAX_BATCH_EVENTS,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_ORDERING_KEY_LENGTH,
    check_customer_id,
    is_event_type,
)
from webhookd.models import EVENT_TYPES, ApiKey, NewEvent, Scope, is_id
from webhookd.store.base import log_cursor_pattern
from webhookd.tracing import Span
from webhookd.web import JSONResponse, Services, object_fields, query_param, read_json_object, services

PUBLISH_FIELDS = {"type", "data", "customer_id", "idempotency_key", "callback_url", "ordering_key"}
PUBLISH_SPAN = {"http.request.method": "POST"}
BATCH_FIELDS = {"events"}
BATCH_PATH_TAIL = "batch"
"""``/api/v1/events/batch``: the batch publish, which the ``{event_id}`` path also matches."""
DESCRIPTIONS = {
    "call.initiating": "The call was created and is dialing, or an inbound call was offered.",
    "call.ringing": "The far end is alerting.",
    "call.in_progress": "The call was answered.",
    "call.completed": "The call was answered and has ended.",
    "call.failed": "The call could not be placed or connected, or was canceled by the platform.",
    "call.no_answer": "The call ended unanswered: busy, declined, ring timeout or abandoned.",
    "call.transcript.ready": "The call's transcript is available.",
    "webhook.test": "Sent by POST /webhook-subscriptions/{id}/test.",
}


def _customer_for(key: ApiKey, requested: Any) -> str:
    if requested is None or requested == key.customer_id:
        return key.customer_id
    customer_id = check_customer_id(requested)
    if Scope.ADMIN not in key.scopes:
        raise ApiError("only an admin key may publish for another customer", status=403, code="forbidden")
    return customer_id


def _optional_key(body: dict[str, Any], name: str, max_length: int, example: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= max_length):
        raise ApiError(
            f"{name} must be a string of 1 to {max_length} characters ({example}, say)",
            code=f"invalid_{name}",
        )
    return value


def _new_event(key: ApiKey, body: dict[str, Any], traceparent: str | None) -> NewEvent:
    event_type, data = body.get("type"), body.get("data", {})
    if not is_event_type(event_type):
        raise ApiError(f"type must be {EVENT_TYPE_RULE}", code="invalid_event_type")
    if not isinstance(data, dict):
        raise ApiError("data must be a JSON object", code="invalid_data")
    callback_url = body.get("callback_url")
    callback_url = None if callback_url is None else valid_url(callback_url, "callback_url")
    return NewEvent(
        _customer_for(key, body.get("customer_id")),
        event_type,
        data,
        _optional_key(body, "idempotency_key", MAX_IDEMPOTENCY_KEY_LENGTH, "an order id"),
        callback_url=callback_url,
        ordering_key=_optional_key(body, "ordering_key", MAX_ORDERING_KEY_LENGTH, "a call's id"),
        traceparent=traceparent,
    )


async def _check_callback(svc: Services, event: NewEvent) -> None:
    if event.callback_url is not None:
        await check_destination(svc, event.callback_url, "callback_url")


async def _prepare_customer(svc: Services, key: ApiKey, event: NewEvent) -> None:
    """What the event's customer needs before it is stored: to exist, and a callback secret to sign
    its callback_url's deliveries (made on first use)."""
    if event.customer_id != key.customer_id:
        await svc.store.ensure_customer(event.customer_id)
    if event.callback_url is not None:
        await callback_secret(svc, event.customer_id)


@operation(
    summary="Publish an event (202; a repeated idempotency_key answers 200 with the original)",
    scope=Scope.PUBLISH_EVENTS,
    body="PublishEvent",
    traced=True,
    responses={202: "Event", 200: "Event"},
    tag="events",
)
async def publish_event(request: Request) -> Response:
    return await _in_publish_span(request, _publish)


async def _in_publish_span(
    request: Request, handler: Callable[[Request, Span], Awaitable[Response]]
) -> Response:
    svc = services(request)
    # A traceparent header on the request is the parent; deliveries continue the trace.
    with svc.tracing.span("webhookd.publish", PUBLISH_SPAN, kind="server", parent=request.headers) as span:
        response = await handler(request, span)
        span.set("http.response.status_code", response.status_code)
        return response


async def _publish(request: Request, span: Span) -> Response:
    key = await authenticate(request, Scope.PUBLISH_EVENTS, rate_limited=False)
    svc = services(request)
    body = await read_json_object(request, svc.settings.max_body_bytes, PUBLISH_FIELDS)
    event = _new_event(key, body, span.traceparent)
    span.set("webhookd.event.type", event.type)
    span.set("webhookd.customer.id", event.customer_id)
    await _check_callback(svc, event)
    await _prepare_customer(svc, key, event)
    result = await svc.store.publish(event, delay_s=svc.settings.retry_schedule_s[0])
    svc.metrics.count_event(result)
    status = 202 if result.created else 200
    return Response(event_body(result.event), status_code=status, media_type="application/json")


@contextlib.contextmanager
def _at(index: int) -> Iterator[None]:
    """A refusal of the batch's event ``index`` names it: the whole batch is refused for it."""
    try:
        yield
    except RequestError as exc:
        raise ApiError(f"events[{index}]: {exc.message}", status=exc.status, code=exc.code) from None


def _new_events(key: ApiKey, body: dict[str, Any], traceparent: str | None) -> list[NewEvent]:
    items = body.get("events")
    if not isinstance(items, list) or not items:
        raise ApiError(
            f"events must be a list of 1 to {MAX_BATCH_EVENTS} events, each what POST /api/v1/events takes",
            code="invalid_events",
        )
    if len(items) > MAX_BATCH_EVENTS:
        raise ApiError(
            f"events holds {len(items)} events and a batch takes at most {MAX_BATCH_EVENTS}:"
            " split it into several batches",
            code="too_many_events",
        )
    events = []
    for index, item in enumerate(items):
        with _at(index):
            events.append(_new_event(key, object_fields(item, PUBLISH_FIELDS, "the event"), traceparent))
    return events


async def _prepare_batch(svc: Services, key: ApiKey, events: list[NewEvent]) -> None:
    """Every event's checks, then what their customers need: a refused event stores nothing.
    A customer or callback_url repeated across the batch is seen to once."""
    checked: set[str | None] = set()
    for index, event in enumerate(events):
        if event.callback_url not in checked:
            checked.add(event.callback_url)
            with _at(index):
                await _check_callback(svc, event)
    prepared: set[tuple[str, bool]] = set()
    for event in events:
        needs = (event.customer_id, event.callback_url is not None)
        if needs not in prepared:
            prepared.add(needs)
            await _prepare_customer(svc, key, event)


@operation(
    summary=f"Publish up to {MAX_BATCH_EVENTS} events, all or none (202; 200 when every one is a repeat)",
    description=(
        "Each event is what POST /api/v1/events takes, checked the same way; one refused event refuses"
        " the batch (the message names it, as events[3]) and none is stored. The answer has one item per"
        " event, in order: status 202 and the stored event, or status 200 and the original event when"
        " its idempotency_key was seen before, in an earlier request or earlier in this batch."
    ),
    scope=Scope.PUBLISH_EVENTS,
    body="PublishBatch",
    traced=True,
    responses={202: "BatchResult", 200: "BatchResult"},
    tag="events",
)
async def publish_batch(request: Request) -> Response:
    return await _in_publish_span(request, _publish_batch)


async def _publish_batch(request: Request, span: Span) -> Response:
    key = await authenticate(request, Scope.PUBLISH_EVENTS, rate_limited=False)
    svc = services(request)
    body = await read_json_object(request, svc.settings.max_body_bytes, BATCH_FIELDS)
    events = _new_events(key, body, span.traceparent)
    span.set("webhookd.batch.events", len(events))
    await _prepare_batch(svc, key, events)
    results = await svc.store.publish_many(events, delay_s=svc.settings.retry_schedule_s[0])
    for result in results:
        svc.metrics.count_event(result)
    status = 202 if any(result.created for result in results) else 200
    return Response(batch_body(results), status_code=status, media_type="application/json")


@operation(
    summary="List events, newest first",
    scope=Scope.READ_EVENTS,
    tag="events",
    query=(*page_params(log_cursor_pattern("evt")), ("type", PUBLISHED_TYPE, "only this event type")),
    responses={200: "EventList"},
)
async def list_events(request: Request) -> Response:
    key = await authenticate(request, Scope.READ_EVENTS)
    event_type = query_param(request, "type")
    if event_type is not None and not is_event_type(event_type):
        raise ApiError(f"type must be {EVENT_TYPE_RULE}", code="invalid_parameter")
    with cursor_checked():
        page = await services(request).store.list_events(key.customer_id, page_request(request), event_type)
    return JSONResponse({"data": [event_json(e) for e in page.items], "next_cursor": page.next_cursor})


@operation(
    summary="Get an event: the key's customer's, or with an admin key any customer's",
    scope=Scope.READ_EVENTS,
    responses={200: "Event", 404: None},
    tag="events",
)
async def get_event(request: Request) -> Response:
    key = await authenticate(request, Scope.READ_EVENTS)
    event_id = request.path_params["event_id"]
    if event_id == BATCH_PATH_TAIL:  # POST /events/batch's path, which answers no GET
        raise HTTPException(405)
    # An admin publishes for any customer (POST /events with customer_id), so it reads any event back.
    owner = None if Scope.ADMIN in key.scopes else key.customer_id
    # An id no event can have is not looked up (PostgreSQL would refuse one holding a NUL).
    found = is_id(event_id, "evt")
    event = await services(request).store.get_event(owner, event_id) if found else None
    if event is None:
        raise ApiError("no such event", status=404, code="not_found")
    return Response(event_body(event), media_type="application/json")


@operation(summary="The event-type catalog", scope=None, responses={200: "EventTypes"}, tag="events")
async def event_types(request: Request) -> Response:
    await authenticate(request, None)
    return JSONResponse({"data": [{"type": t, "description": DESCRIPTIONS[t]} for t in EVENT_TYPES]})
