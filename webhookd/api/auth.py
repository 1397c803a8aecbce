"""Bearer API keys: looked up by hash, checked for scope."""

from __future__ import annotations

from starlette.requests import Request

from webhookd.crypto import API_KEY_PREFIX, hash_api_key
from webhookd.exceptions import ApiError
from webhookd.models import ApiKey, Scope
from webhookd.web import services


async def authenticate(request: Request, scope: Scope | None) -> ApiKey:
    """The caller's key. 401 without a valid key; 403 when the key lacks ``scope``.

    The key is found by its SHA-256, so no secret is ever compared byte by byte.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(API_KEY_PREFIX):
        raise ApiError("send an API key as 'Authorization: Bearer whd_...'", status=401, code="unauthorized")
    key = await services(request).keys.get(hash_api_key(token))
    if key is None:
        raise ApiError("the API key is not valid", status=401, code="unauthorized")
    if scope is not None and scope not in key.scopes and Scope.ADMIN not in key.scopes:
        raise ApiError(f"this key lacks the {scope.value} scope", status=403, code="forbidden")
    request.state.api_key = key
    return key
