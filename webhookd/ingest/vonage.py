"""Vonage Voice API event webhooks: a signed JWT in ``Authorization: Bearer`` and JSON events.

The JWT is HS256 over the account's signature secret; its ``payload_hash`` claim binds the raw body and its
``iat`` claim must be within five minutes of our clock. The check is written out here (no JWT library) so
that nothing but HS256 can ever be accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from webhookd.exceptions import PayloadInvalid, SignatureInvalid
from webhookd.ingest.base import RawCallback, credential
from webhookd.ingest.normalize import NormalizedCall, answered_by, check_json, e164, parse_time
from webhookd.models import CREDENTIAL_NAMES, Carrier

MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far ``iat`` may be from our clock, either way (Vonage suggests 5 min)."""

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_SECONDS = re.compile(r"[0-9]{1,10}")
_MAX_NUMERIC_DATE = 10**12
_TYPES: dict[str, tuple[str, str | None]] = {
    "started": ("call.initiating", None),
    "ringing": ("call.ringing", None),
    "answered": ("call.in_progress", None),
    "completed": ("call.completed", "normal"),
    "busy": ("call.no_answer", "busy"),
    "timeout": ("call.no_answer", "timeout"),
    "rejected": ("call.failed", "rejected"),
}
_CANCELLED = {"cancelled", "canceled"}
_AMD = {"human", "machine"}
_STATUSES = {*_TYPES, *_CANCELLED, *_AMD, "unanswered", "failed"}
_TERMINAL = {"completed", "busy", "timeout", "rejected", "unanswered", "failed", *_CANCELLED}
_FAILED_DETAILS = {
    "invalid_number",
    "cannot_route",
    "number_out_of_service",
    "restricted",
    "internal_error",
    "carrier_timeout",
}
_HANGUP_SOURCES = {"user", "platform"}
_ID_FIELDS = ("uuid", "call_uuid", "conversation_uuid")
MAX_DURATION_S = 10**9


def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value whatever the case of its name (Starlette's headers are already case-blind)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((item for key, item in headers.items() if key.lower() == wanted), "")


# -- signature ---------------------------------------------------------------------------------


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _segment_json(segment: str) -> dict[str, Any]:
    """A JWT header or claims segment: unpadded base64url of a JSON object."""
    if not _SEGMENT.fullmatch(segment):
        raise SignatureInvalid("the JWT is malformed")
    try:
        decoded = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise SignatureInvalid("the JWT is malformed") from None
    if not isinstance(decoded, dict):
        raise SignatureInvalid("the JWT is malformed")
    return decoded


def decode_hs256(token: str, secret: str) -> dict[str, Any]:
    """The claims of an HS256 JWT signed with ``secret``; any other ``alg`` is refused."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(part) for part in parts):
        raise SignatureInvalid("the JWT is malformed")
    head, claims, signature = parts
    jose = _segment_json(head)
    if jose.get("alg") != "HS256" or "crit" in jose:
        raise SignatureInvalid("the JWT must use alg HS256")
    expected = _b64url(hmac.new(secret.encode(), f"{head}.{claims}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature.encode()):
        raise SignatureInvalid("the JWT signature does not match the signature secret")
    return _segment_json(claims)


def _body_hashes(body: bytes) -> list[bytes]:
    """Hex SHA-256 of the raw body, then of its compact re-serialization (for a body re-encoded in
    transit)."""
    hashes = [hashlib.sha256(body).hexdigest().encode()]
    try:
        compact = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, RecursionError):
        return hashes
    return [*hashes, hashlib.sha256(compact).hexdigest().encode()]


def _check_payload_hash(claims: Mapping[str, Any], body: bytes) -> None:
    claimed = claims.get("payload_hash")
    if not isinstance(claimed, str) or not claimed:
        raise SignatureInvalid("the JWT has no payload_hash claim")
    wanted = claimed.lower().encode("utf-8", "replace")
    if not any([hmac.compare_digest(actual, wanted) for actual in _body_hashes(body)]):
        raise SignatureInvalid("the JWT payload_hash does not match the body")


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if not valid or not math.isfinite(value) or abs(value) > _MAX_NUMERIC_DATE:
        raise SignatureInvalid(f"the JWT {name} claim is not a time")
    return float(value)


def _check_times(claims: Mapping[str, Any], now: datetime) -> None:
    """``iat`` within the skew either way; ``exp``/``nbf``, when present, with the same leeway."""
    moment, skew = now.timestamp(), MAX_CLOCK_SKEW.total_seconds()
    issued = _numeric_date(claims, "iat")
    if issued is None:
        raise SignatureInvalid("the JWT has no iat claim")
    if abs(moment - issued) > skew:
        raise SignatureInvalid("the JWT iat is stale or in the future; is the clock right?")
    expires, not_before = _numeric_date(claims, "exp"), _numeric_date(claims, "nbf")
    if (expires is not None and moment > expires + skew) or (
        not_before is not None and moment < not_before - skew
    ):
        raise SignatureInvalid("the JWT has expired or is not yet valid")


def bearer_token(headers: Mapping[str, str]) -> str:
    scheme, _, token = header(headers, "authorization").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SignatureInvalid("the Authorization: Bearer header is missing")
    return token.strip()


# -- adapter -----------------------------------------------------------------------------------


class VonageAdapter:
    credential_names = CREDENTIAL_NAMES[Carrier.VONAGE]

    def verify(self, callback: RawCallback, credentials: Mapping[str, str], now: datetime) -> None:
        secret = credential(credentials, "signature_secret", "Vonage")
        claims = decode_hs256(bearer_token(callback.headers), secret)
        _check_payload_hash(claims, callback.body)
        _check_times(claims, now)

    def parse(self, callback: RawCallback) -> list[NormalizedCall]:
        # The JWT covers the body only, not the URL: query parameters are unsigned, so none of them
        # become metadata (a per-call callback_url must not come from an unsigned source).
        return normalize_vonage(load_event(callback.body))


# -- normalization -----------------------------------------------------------------------------


def load_event(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError):
        raise PayloadInvalid("the body is not JSON") from None
    if not isinstance(fields, dict):
        raise PayloadInvalid("the body is not a JSON object")
    check_json(body, fields)
    return fields


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    """A string field (numbers are taken as their text); anything else is a bad payload."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise PayloadInvalid(f"{name} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadInvalid(f"{name} is not valid Unicode") from None
    return value


def _time(raw: str | None) -> datetime | None:
    try:
        return parse_time(raw)
    except (OverflowError, ValueError):
        return None


def _type_and_reason(status: str, detail: str | None, direction: str | None) -> tuple[str | None, str | None]:
    if status in _AMD:
        return None, None
    if status in _CANCELLED:
        if direction == "outbound":
            return "call.failed", "canceled"
        return "call.no_answer", "caller_abandoned"
    if status == "unanswered":
        return ("call.failed" if detail in _FAILED_DETAILS else "call.no_answer"), detail or "no_answer"
    if status == "failed":
        return "call.failed", detail or "failed"
    return _TYPES[status]


def _hangup_source(raw: str | None) -> str | None:
    if raw is None:
        return None
    return raw.lower() if raw.lower() in _HANGUP_SOURCES else "unknown"


def _duration(fields: Mapping[str, Any]) -> int | None:
    value = fields.get("duration")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    if isinstance(value, str):
        # Not parse_int: str.isdigit() accepts characters such as '²' that int() refuses.
        value = int(value.strip()) if _SECONDS.fullmatch(value.strip()) else -1
    return value if 0 <= value <= MAX_DURATION_S else None


def normalize_vonage(fields: Mapping[str, Any]) -> list[NormalizedCall]:
    """One Vonage event to zero or one normalized update; non-call events (record, input, ...) give []."""
    status_raw = _text(fields, "status")
    if status_raw is None or status_raw.lower() not in _STATUSES:
        if not any(_text(fields, name) for name in _ID_FIELDS):
            raise PayloadInvalid("not a Vonage event: no status, uuid or conversation_uuid")
        return []
    status = status_raw.lower()
    call_id = _text(fields, "uuid") or _text(fields, "call_uuid")
    if call_id is None:
        raise PayloadInvalid("a Vonage call event needs uuid (or call_uuid)")
    return [_call_update(fields, call_id, status_raw, status)]


def _call_update(fields: Mapping[str, Any], call_id: str, status_raw: str, status: str) -> NormalizedCall:
    stamp, detail = _text(fields, "timestamp"), _text(fields, "detail")
    direction = (_text(fields, "direction") or "").lower()
    direction_or_none = direction if direction in {"inbound", "outbound"} else None
    event_type, reason = _type_and_reason(status, detail, direction_or_none)
    occurred, terminal = _time(stamp), status in _TERMINAL
    from_raw, to_raw = _text(fields, "from"), _text(fields, "to")
    answered_at = _time(_text(fields, "start_time"))
    if status == "answered":
        answered_at = answered_at or occurred
    return NormalizedCall(
        type=event_type,
        idempotency_key=f"vonage:{call_id}:{status_raw}:{stamp or 'na'}",
        carrier=Carrier.VONAGE.value,
        carrier_call_id=call_id,
        status_raw=status_raw,
        occurred_at=occurred,
        direction=direction_or_none,
        from_number=e164(from_raw, digits_have_country_code=True),
        from_raw=from_raw,
        to_number=e164(to_raw, digits_have_country_code=True),
        to_raw=to_raw,
        reason=reason,
        carrier_session_id=_text(fields, "conversation_uuid"),
        answered_by=answered_by(status) if status in _AMD else None,
        answered_by_raw=status_raw if status in _AMD else None,
        answered_at=answered_at if status in {"answered", "completed"} else None,
        ended_at=(_time(_text(fields, "end_time")) or occurred) if terminal else None,
        duration_seconds=_duration(fields) if terminal else None,
        hangup_source=_hangup_source(_text(fields, "disconnected_by")) if terminal else None,
        carrier_cause=detail if terminal else None,
    )
