"""``/api/v1/webhook-subscriptions``: create (idempotent), list, get, patch, delete, enable,
rotate-secret, test and recover; and the Make.com ``?challenge=`` probe."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from webhookd import actions
from webhookd.actions import (
    SigningSecret,
    check_destination,
    signing_secret,
    valid_description,
    valid_events,
    valid_headers,
    valid_ordered,
    valid_rate_limit,
    valid_scheme,
    valid_url,
)
from webhookd.api.auth import authenticate
from webhookd.api.openapi import operation, page_params
from webhookd.api.pagination import cursor_checked, page_request
from webhookd.api.views import event_json, subscription_json
from webhookd.crypto import open_headers, seal_headers
from webhookd.exceptions import ApiError, Conflict
from webhookd.inputs import utc_time
from webhookd.models import Scope, Subscription, is_id, isoformat, new_id, utcnow
from webhookd.store.base import cursor_pattern
from webhookd.web import JSONResponse, Services, query_param, read_json_object, services

SUBSCRIPTION_FIELDS = frozenset(
    {"url", "events", "description", "rate_limit_per_second", "ordered", "headers"}
)
CREATE_FIELDS = SUBSCRIPTION_FIELDS | {"signature_scheme"}


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


@operation(
    summary="Create a subscription (idempotent), or answer Make.com's ?challenge= probe",
    description="The same url and set of events answers 200 with the original subscription as it is"
    " (the repeat's other fields change nothing: PATCH does) and no new secret. A `v1` subscription's"
    " `secret` is shown in the 201 alone; a `v1a` one's private key is never shown, its `public_key`"
    " always. Make.com's connection check is `POST /api/v1/webhook-subscriptions?challenge=<token>`"
    ' with no key and no body: the token is echoed as `{"challenge": "<token>"}` with 202, and'
    " nothing is stored. An empty `challenge` is a 400. (See `x-probe`.)",
    body="SubscriptionCreate",
    scope=Scope.MANAGE_WEBHOOKS,
    probe=(
        "challenge",
        {"type": "string", "minLength": 1},
        "Make.com's probe token: echoed with 202, no key or body needed",
    ),
    responses={201: "Subscription", 200: "Subscription", 202: "Challenge"},
)
async def create_subscription(request: Request) -> Response:
    challenge = query_param(request, "challenge")
    if challenge is not None:
        # Make.com's connection check: echo the token, no auth, no database write.
        return JSONResponse({"challenge": challenge}, status_code=202)
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    svc = services(request)
    body = await read_json_object(request, svc.settings.max_body_bytes, CREATE_FIELDS)
    candidate, signing = _candidate(svc, key.customer_id, body)
    await check_destination(svc, candidate.url)
    result = await svc.store.create_subscription(candidate)
    if result.created:
        return JSONResponse(shown(svc, result.subscription, signing.shown_secret), status_code=201)
    return JSONResponse(shown(svc, result.subscription), status_code=200)


def _candidate(svc: Services, customer_id: str, body: dict[str, Any]) -> tuple[Subscription, SigningSecret]:
    """The subscription a create body asks for, with its new signing secret."""
    url, events = valid_url(body.get("url")), valid_events(body.get("events"))
    description = valid_description(body.get("description"))
    rate_limit = valid_rate_limit(body.get("rate_limit_per_second"))
    ordered = valid_ordered(body.get("ordered", False))
    headers = valid_headers(body.get("headers", {}))
    sub_id = new_id("sub")
    signing = signing_secret(svc, sub_id, valid_scheme(body.get("signature_scheme", "v1")))
    candidate = Subscription(
        sub_id,
        customer_id,
        url,
        events,
        description,
        signing.ciphertext,
        True,
        utcnow(),
        rate_limit_per_second=rate_limit,
        ordered=ordered,
        headers=seal_headers(svc.box, sub_id, headers) or None,
        signature_scheme=signing.scheme,
        public_key=signing.public_key,
    )
    return candidate, signing


def shown(svc: Services, sub: Subscription, secret: str | None = None) -> dict[str, Any]:
    """A subscription as its customer sees it: with its custom headers, decrypted."""
    return subscription_json(sub, secret, open_headers(svc.box, sub.id, sub.headers))


@operation(
    summary="List subscriptions",
    scope=Scope.MANAGE_WEBHOOKS,
    query=page_params(cursor_pattern("sub")),
    responses={200: "SubscriptionList"},
)
async def list_subscriptions(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    svc = services(request)
    with cursor_checked():
        page = await svc.store.list_subscriptions(key.customer_id, page_request(request))
    return JSONResponse({"data": [shown(svc, s) for s in page.items], "next_cursor": page.next_cursor})


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
    svc, _, sub = await _owned(request)
    return JSONResponse(shown(svc, sub))


@operation(
    summary="Change a subscription's url, events, description, rate limit or ordering",
    scope=Scope.MANAGE_WEBHOOKS,
    body="SubscriptionPatch",
    responses={200: "Subscription", 404: None, 409: None},
)
async def patch_subscription(request: Request) -> Response:
    svc, customer_id, sub = await _owned(request)
    body = await read_json_object(request, svc.settings.max_body_bytes, CREATE_FIELDS)
    if not body:
        raise ApiError(f"send at least one of {', '.join(sorted(SUBSCRIPTION_FIELDS))}", code="invalid_field")
    if "signature_scheme" in body:
        raise ApiError(
            "signature_scheme changes with a rotation: POST .../rotate-secret with"
            ' {"signature_scheme": "v1" or "v1a"}, so the old key keeps signing for the grace period',
            code="invalid_field",
        )
    updated = await actions.edit_subscription(svc, customer_id, sub.id, body)
    if updated is None:
        raise not_found()
    return JSONResponse(shown(svc, updated))


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
    svc = services(request)
    sub = await svc.store.enable_subscription(key.customer_id, subscription_id(request))
    if sub is None:
        raise not_found()
    return JSONResponse(shown(svc, sub))


@operation(
    summary="Rotate the signing secret; the old one keeps signing for the grace period",
    description="The body is optional: `signature_scheme` moves the subscription to that scheme with"
    " the new key (the old key, of the old scheme, keeps signing for the grace period); without it the"
    " scheme stays. A `v1` rotation answers the new `secret`, a `v1a` one the new `public_key`.",
    scope=Scope.MANAGE_WEBHOOKS,
    body="Rotate",
    body_required=False,
    responses={200: "SigningKey", 404: None},
)
async def rotate_secret(request: Request) -> Response:
    svc, _, sub = await _owned(request)
    body = await read_json_object(request, svc.settings.max_body_bytes, {"signature_scheme"}, optional=True)
    scheme = valid_scheme(body["signature_scheme"]) if "signature_scheme" in body else None
    rotated = await actions.rotate_secret(svc, sub, scheme)
    if rotated is None:
        raise not_found()
    signing = rotated.signing
    return JSONResponse(
        {
            "signature_scheme": signing.scheme.value,
            "secret": signing.shown_secret,
            "public_key": signing.public_key,
            "previous_secret_expires_at": isoformat(rotated.previous_until),
        }
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
    return await recovered(request, svc, sub)


async def recovered(request: Request, svc: Services, sub: Subscription) -> Response:
    """Recover ``sub``'s failed deliveries in the window the body gives (the customer's or an operator's)."""
    body = await read_json_object(request, svc.settings.max_body_bytes, {"since", "until"})
    since, until = _timestamp(body, "since"), _timestamp(body, "until", utcnow())
    # A window that ends before it starts holds nothing, and is answered so rather than refused:
    # the OpenAPI document has no way to say that one time of a body must precede the other.
    recovery = await actions.recover_failed(svc, sub, since, until)
    return JSONResponse({"requeued": recovery.requeued, "more": recovery.more}, status_code=202)
