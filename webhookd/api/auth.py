"""Bearer API keys: looked up by hash, checked for scope."""

from __future__ import annotations

import logging

from starlette.requests import Request

from webhookd.crypto import API_KEY_PREFIX, hash_api_key
from webhookd.exceptions import ApiError, StoreError
from webhookd.models import ApiKey, Scope
from webhookd.web import Services, request_state, services

logger = logging.getLogger(__name__)


async def authenticate(request: Request, scope: Scope | None, *, rate_limited: bool = True) -> ApiKey:
    """The caller's key. 401 without a valid key; 429 past the key's rate; 403 when the key lacks
    ``scope``. ``rate_limited=False`` is for the platform's own event stream (``POST /events``),
    which like carrier ingest runs at thousands a second; the limit is for management calls.

    The key is found by its SHA-256, so no secret is ever compared byte by byte.
    """
    svc, state = services(request), request_state(request)
    state["rate_limit"] = svc.limiter.full  # until the key is known
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(API_KEY_PREFIX):
        raise ApiError("send an API key as 'Authorization: Bearer whd_...'", status=401, code="unauthorized")
    key = await svc.keys.get(hash_api_key(token))
    if key is None or key.revoked_at is not None:
        raise ApiError("the API key is not valid", status=401, code="unauthorized")
    if svc.keys.use_is_due(key.id):
        svc.background.spawn(_mark_used(svc, key.id), name=f"key-used-{key.id}")
    decision = svc.limiter.take(key.id) if rate_limited else svc.limiter.peek(key.id)
    state["rate_limit"] = decision
    if not decision.allowed:
        raise ApiError(
            f"rate limit of {decision.limit} requests a minute reached; retry in {decision.retry_after_s}s",
            status=429,
            code="rate_limited",
            headers={"Retry-After": str(decision.retry_after_s)},
        )
    if scope is not None and scope not in key.scopes and Scope.ADMIN not in key.scopes:
        raise ApiError(f"this key lacks the {scope.value} scope", status=403, code="forbidden")
    return key


async def _mark_used(svc: Services, key_id: str) -> None:
    """Record the key's use, in the background and at best: a use missed while the database refuses
    writes only leaves ``last_used_at`` a little older; the request is not held up for it."""
    try:
        await svc.store.mark_api_key_used(key_id, svc.clock())
    except StoreError as exc:
        logger.info("key use not recorded: %s", exc, extra={"action": "api.key_use_skipped"})
