"""``/api/v1/webhook-subscriptions``: create (idempotent), list, get, patch, delete, enable,
rotate-secret, test and recover; and the Make.com ``?challenge=`` probe."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from webhookd import actions
from webhookd.api.auth import authenticate
from webhookd.api.openapi import operation, page_params
from webhookd.api.pagination import page_request
from webhookd.api.views import event_json, subscription_json
from webhookd.crypto import new_webhook_secret, subscription_secret_context
from webhookd.exceptions import ApiError, Conflict, DestinationBlocked
from webhookd.inputs import (
    HTTP_URL,
    MAX_DESCRIPTION_LENGTH,
    MAX_RATE_LIMIT_PER_SECOND,
    MAX_URL_LENGTH,
    utc_time,
)
from webhookd.models import EVENT_TYPES, Scope, Subscription, is_id, isoformat, new_id, utcnow
from webhookd.store.base import SubscriptionUpdate, cursor_pattern
from webhookd.web import JSONResponse, Services, query_param, read_json_object, services

SUBSCRIPTION_FIELDS = frozenset({"url", "events", "description", "rate_limit_per_second", "ordered"})


def not_found() -> ApiError:
    """Missing and another customer's look the same: existence is never leaked."""
    return ApiError("no such subscription", status=404, code="not_found")


def subscription_id(request: Request) -> str:
    """The path's subscription id. One that no subscription can have is answered 404 like a missing
    one without a lookup (PostgreSQL would refuse one holding a NUL)."""
    found: str = request.path_params["subscription_id"]
    if not is_id(found, "sub"):
        raise not_found()
    return found


def valid_url(value: Any, field: str = "url") -> str:
    if not isinstance(value, str) or not value:
        raise ApiError(f"{field} is required and must be a string", code="invalid_url")
    if len(value) > MAX_URL_LENGTH:
        raise ApiError(f"{field} is longer than {MAX_URL_LENGTH} characters", code="invalid_url")
    try:
        parts = urlsplit(value)
        hostname, _ = parts.hostname, parts.port
    except ValueError:
        raise ApiError(f"{field} is not a valid URL", code="invalid_url") from None
    if parts.scheme not in {"http", "https"} or not hostname:
        raise ApiError(f"{field} must be an absolute http:// or https:// URL", code="invalid_url")
    if parts.username or parts.password:
        raise ApiError(f"{field} must not carry credentials", code="invalid_url")
    if not HTTP_URL.fullmatch(value):  # whole: "$" would also match before a final newline
        raise ApiError(
            f"{field} must be a valid URI: percent-encode spaces, non-ASCII characters, '%' itself,"
            " and '[', ']' or a second '#' after the host",
            code="invalid_url",
        )
    return value


def _valid_events(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ApiError("events must be a non-empty list of event type strings", code="invalid_events")
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise ApiError(f"unknown event types {unknown}; known: {list(EVENT_TYPES)}", code="invalid_events")
    return tuple(sorted(set(value)))


def _valid_description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH:
        raise ApiError(
            f"description must be a string of at most {MAX_DESCRIPTION_LENGTH} characters",
            code="invalid_description",
        )
    return value


def _valid_rate_limit(value: Any) -> int | None:
    """Attempts per second, or ``None`` for no limit. ``bool`` is an ``int`` in Python, not here."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE_LIMIT_PER_SECOND:
        raise ApiError(
            f"rate_limit_per_second must be a whole number from 1 to {MAX_RATE_LIMIT_PER_SECOND},"
            " or null for no limit",
            code="invalid_rate_limit",
        )
    return value


def _valid_ordered(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ApiError(
            "ordered must be true (a call's events arrive one at a time, in order) or false",
            code="invalid_ordered",
        )
    return value


async def check_destination(svc: Services, url: str, field: str = "url") -> None:
    """The SSRF guard at create time; the sender checks again at connect time."""
    try:
        await svc.guard.check_url(url)
    except DestinationBlocked as exc:
        raise ApiError(f"{field} is not allowed: {exc}", code="destination_blocked") from None


@operation(
    # The probe is left out of the operation's parameters: it takes no key and no body, where the
    # operation requires both, and one OpenAPI operation cannot describe the two.
    summary="Create a subscription (idempotent). Make.com's probe, ?challenge=<token> with no key and"
    " no body, is echoed with 202",
    body="SubscriptionCreate",
    scope=Scope.MANAGE_WEBHOOKS,
    responses={201: "Subscription", 200: "Subscription", 202: "Challenge"},
)
async def create_subscription(request: Request) -> Response:
    challenge = query_param(request, "challenge")
    if challenge is not None:
        # Make.com's connection check: echo the token, no auth, no database write.
        return JSONResponse({"challenge": challenge}, status_code=202)
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    svc = services(request)
    body = await read_json_object(request, svc.settings.max_body_bytes, SUBSCRIPTION_FIELDS)
    url, events = valid_url(body.get("url")), _valid_events(body.get("events"))
    description = _valid_description(body.get("description"))
    rate_limit = _valid_rate_limit(body.get("rate_limit_per_second"))
    ordered = _valid_ordered(body.get("ordered", False))
    await check_destination(svc, url)
    secret, sub_id = new_webhook_secret(), new_id("sub")
    ciphertext = svc.box.encrypt(secret.encode(), subscription_secret_context(sub_id))
    candidate = Subscription(
        sub_id,
        key.customer_id,
        url,
        events,
        description,
        ciphertext,
        True,
        utcnow(),
        rate_limit_per_second=rate_limit,
        ordered=ordered,
    )
    result = await svc.store.create_subscription(candidate)
    if result.created:
        return JSONResponse(subscription_json(result.subscription, secret), status_code=201)
    return JSONResponse(subscription_json(result.subscription), status_code=200)


@operation(
    summary="List subscriptions",
    scope=Scope.MANAGE_WEBHOOKS,
    query=page_params(cursor_pattern("sub")),
    responses={200: "SubscriptionList"},
)
async def list_subscriptions(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    try:
        page = await services(request).store.list_subscriptions(key.customer_id, page_request(request))
    except ValueError as exc:
        raise ApiError(str(exc), code="invalid_cursor") from None
    return JSONResponse({"data": [subscription_json(s) for s in page.items], "next_cursor": page.next_cursor})


async def _owned(request: Request) -> tuple[Services, str, Subscription]:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    svc = services(request)
    sub = await svc.store.get_subscription(key.customer_id, subscription_id(request))
    if sub is None:
        raise not_found()
    return svc, key.customer_id, sub


@operation(
    summary="Get a subscription", scope=Scope.MANAGE_WEBHOOKS, responses={200: "Subscription", 404: None}
)
async def get_subscription(request: Request) -> Response:
    _, _, sub = await _owned(request)
    return JSONResponse(subscription_json(sub))


@operation(
    summary="Change a subscription's url, events, description, rate limit or ordering",
    scope=Scope.MANAGE_WEBHOOKS,
    body="SubscriptionPatch",
    responses={200: "Subscription", 404: None, 409: None},
)
async def patch_subscription(request: Request) -> Response:
    svc, customer_id, sub = await _owned(request)
    body = await read_json_object(request, svc.settings.max_body_bytes, SUBSCRIPTION_FIELDS)
    if not body:
        raise ApiError(f"send at least one of {', '.join(sorted(SUBSCRIPTION_FIELDS))}", code="invalid_field")
    update = _update(body)
    if update.url is not None:
        await check_destination(svc, update.url)
    try:
        updated = await svc.store.update_subscription(customer_id, sub.id, update)
    except Conflict as exc:
        raise ApiError(str(exc), status=409, code="conflict") from None
    if updated is None:
        raise not_found()
    return JSONResponse(subscription_json(updated))


def _update(body: dict[str, Any]) -> SubscriptionUpdate:
    """A PATCH body as an update: absent fields stay; a null description or rate limit clears it."""
    return SubscriptionUpdate(
        url=valid_url(body["url"]) if "url" in body else None,
        events=_valid_events(body["events"]) if "events" in body else None,
        description=(_valid_description(body["description"]) or "") if "description" in body else None,
        rate_limit_per_second=(
            (_valid_rate_limit(body["rate_limit_per_second"]) or 0)
            if "rate_limit_per_second" in body
            else None
        ),
        ordered=_valid_ordered(body["ordered"]) if "ordered" in body else None,
    )


@operation(
    summary="Delete a subscription (its pending deliveries are canceled)",
    scope=Scope.MANAGE_WEBHOOKS,
    responses={204: None, 404: None},
)
async def delete_subscription(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    deleted = await services(request).store.delete_subscription(key.customer_id, subscription_id(request))
    if not deleted:
        raise not_found()
    return Response(status_code=204)


@operation(
    summary="Re-enable a subscription: reset its failure count, resume parked deliveries",
    scope=Scope.MANAGE_WEBHOOKS,
    responses={200: "Subscription", 404: None},
)
async def enable_subscription(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    sub = await services(request).store.enable_subscription(key.customer_id, subscription_id(request))
    if sub is None:
        raise not_found()
    return JSONResponse(subscription_json(sub))


@operation(
    summary="Rotate the signing secret; the old one keeps signing for the grace period",
    scope=Scope.MANAGE_WEBHOOKS,
    responses={200: "Secret", 404: None},
)
async def rotate_secret(request: Request) -> Response:
    svc, customer_id, sub = await _owned(request)
    rotated = await actions.rotate_secret(svc, customer_id, sub.id)
    if rotated is None:
        raise not_found()
    return JSONResponse(
        {"secret": rotated.secret, "previous_secret_expires_at": isoformat(rotated.previous_until)}
    )


@operation(
    summary="Send a webhook.test event to this subscription alone",
    scope=Scope.MANAGE_WEBHOOKS,
    responses={202: "Event", 404: None, 409: None},
)
async def test_subscription(request: Request) -> Response:
    svc, _, sub = await _owned(request)
    try:
        result = await actions.send_test_event(svc, sub)
    except Conflict as exc:
        raise ApiError(str(exc), status=409, code="conflict") from None
    return JSONResponse(event_json(result.event), status_code=202)


def _timestamp(body: dict[str, Any], name: str, default: datetime | None = None) -> datetime:
    raw = body.get(name)
    if raw is None and default is not None:
        return default
    moment = utc_time(raw)
    if moment is None:
        raise ApiError(
            f"{name} must be an ISO-8601 time with a zone, e.g. 2026-05-10T12:00:00Z", code="invalid_time"
        )
    return moment


@operation(
    summary="Re-queue every failed delivery created in a time window",
    scope=Scope.MANAGE_WEBHOOKS,
    body="Recover",
    responses={202: "Recovered", 404: None},
)
async def recover(request: Request) -> Response:
    svc, _, sub = await _owned(request)
    body = await read_json_object(request, svc.settings.max_body_bytes, {"since", "until"})
    since, until = _timestamp(body, "since"), _timestamp(body, "until", utcnow())
    # A window that ends before it starts holds nothing, and is answered so rather than refused:
    # the OpenAPI document has no way to say that one time of a body must precede the other.
    recovery = await actions.recover_failed(svc, sub, since, until)
    return JSONResponse({"requeued": recovery.requeued, "more": recovery.more}, status_code=202)
