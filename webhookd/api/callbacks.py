"""The customer's callback secret, which signs deliveries to per-call ``callback_url``s."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from webhookd.api.auth import authenticate
from webhookd.api.openapi import operation
from webhookd.crypto import callback_secret_context, new_webhook_secret
from webhookd.models import CallbackSecret, Scope, isoformat
from webhookd.web import JSONResponse, Services, services


async def callback_secret(svc: Services, customer_id: str) -> CallbackSecret:
    """The customer's callback secret, made (once, whoever asks first) if it does not exist yet."""
    stored = await svc.store.get_callback_secret(customer_id)
    if stored is None:
        sealed = svc.box.encrypt(new_webhook_secret().encode(), callback_secret_context(customer_id))
        stored = await svc.store.ensure_callback_secret(customer_id, sealed)
    return stored


def _secret_json(svc: Services, customer_id: str, stored: CallbackSecret) -> dict[str, str | None]:
    context = callback_secret_context(customer_id)
    until = stored.previous_until
    return {
        "secret": svc.box.decrypt(stored.secret, context).decode(),
        "previous_secret_expires_at": None if until is None or until <= svc.clock() else isoformat(until),
    }


@operation(
    summary="Read the callback secret (made on first use)",
    scope=Scope.MANAGE_WEBHOOKS,
    responses={200: "Secret"},
    tag="callbacks",
)
async def get_callback_secret(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    svc = services(request)
    return JSONResponse(_secret_json(svc, key.customer_id, await callback_secret(svc, key.customer_id)))


@operation(
    summary="Rotate the callback secret; the old one keeps signing for the grace period",
    scope=Scope.MANAGE_WEBHOOKS,
    responses={200: "Secret"},
    tag="callbacks",
)
async def rotate_callback_secret(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    svc = services(request)
    sealed = svc.box.encrypt(new_webhook_secret().encode(), callback_secret_context(key.customer_id))
    until = svc.clock() + timedelta(seconds=svc.settings.secret_grace_s)
    stored = await svc.store.rotate_callback_secret(key.customer_id, sealed, until)
    return JSONResponse(_secret_json(svc, key.customer_id, stored))
