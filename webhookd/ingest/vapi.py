"""Vapi server messages: HMAC ``x-signature`` or legacy ``X-Vapi-Secret``, ``{message}`` body.

``end-of-call-report`` gives the lifecycle terminal (from ``endedReason``) and, when ``artifact.transcript``
is there, ``call.transcript.ready``. Other message types (``status-update``, ``transcript``, ``tool-calls``,
...) are acknowledged and produce nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from webhookd.exceptions import PayloadInvalid, SignatureInvalid
from webhookd.ingest.base import RawCallback, credential
from webhookd.ingest.normalize import (
    NormalizedCall,
    e164,
    epoch_time,
    header_value,
    json_dict,
    json_int,
    json_object,
    json_str,
    with_transcript,
)
from webhookd.models import CREDENTIAL_NAMES, Carrier

CARRIER = Carrier.VAPI.value
SIGNATURE_HEADER = "x-signature"
TIMESTAMP_HEADER = "x-timestamp"
SECRET_HEADER = "x-vapi-secret"
WINDOW_S = 5 * 60
END_OF_CALL_REPORT = "end-of-call-report"
_NO_ANSWER = {"customer-busy", "customer-did-not-answer"}
_DIRECTIONS = {"outboundPhoneCall": "outbound", "inboundPhoneCall": "inbound"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def compute_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"{timestamp}.{body}"``: the HMAC credential's defaults."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def lifecycle_type(reason: str | None) -> str:
    """``endedReason`` to the terminal type."""
    if reason in _NO_ANSWER:
        return "call.no_answer"
    if reason is not None and ("error" in reason or "failed" in reason):
        return "call.failed"
    return "call.completed"


def _same(given: str, secret: str) -> bool:
    return hmac.compare_digest(given.strip().encode(errors="replace"), secret.encode())


def _verify_hmac(callback: RawCallback, secret: str, signature: str, now: datetime) -> None:
    timestamp = (header_value(callback.headers, TIMESTAMP_HEADER) or "").strip()
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise SignatureInvalid("x-signature needs an x-timestamp in unix seconds")
    now_s = (now - _EPOCH) // timedelta(seconds=1)
    if abs(now_s - int(timestamp)) > WINDOW_S:
        raise SignatureInvalid("x-timestamp is more than 5 minutes from now")
    expected = compute_signature(secret, timestamp, callback.body)
    if not _same(signature.lower(), expected):
        raise SignatureInvalid("x-signature does not match the body")


def _number(message: Mapping[str, Any], call: Mapping[str, Any], key: str) -> str | None:
    """``customer.number`` or ``phoneNumber.number``, on the message or else on its call."""
    holder = json_dict(message.get(key)) or json_dict(call.get(key))
    return json_str(holder.get("number"))


def _duration(start: datetime | None, end: datetime | None, seconds: object) -> int | None:
    if start is not None and end is not None and end >= start:
        return round((end - start).total_seconds())
    number = json_int(seconds)
    return None if number is None or number < 0 else number


def _common(message: Mapping[str, Any], call: Mapping[str, Any], call_id: str) -> dict[str, Any]:
    direction = _DIRECTIONS.get(json_str(call.get("type")) or "")
    customer, ours = _number(message, call, "customer"), _number(message, call, "phoneNumber")
    caller, callee = (ours, customer) if direction == "outbound" else (customer, ours)
    artifact = json_dict(message.get("artifact"))
    return {
        "carrier": CARRIER,
        "carrier_call_id": call_id,
        "status_raw": END_OF_CALL_REPORT,
        "occurred_at": epoch_time(message.get("timestamp"), milliseconds=True),
        "source_kind": "ai_platform",
        "direction": direction,
        "from_number": e164(caller),
        "from_raw": caller,
        "to_number": e164(callee),
        "to_raw": callee,
        "linked_carrier_call_id": json_str(call.get("phoneCallProviderId")),
        "client_ref": json_dict(call.get("metadata")) or None,
        "recording_url": json_str(artifact.get("recordingUrl")) or json_str(message.get("recordingUrl")),
    }


def _lifecycle(message: Mapping[str, Any], common: dict[str, Any], key: str) -> NormalizedCall:
    reason = json_str(message.get("endedReason"))
    event_type = lifecycle_type(reason)
    answered = event_type == "call.completed"
    start, end = epoch_time(message.get("startedAt")), epoch_time(message.get("endedAt"))
    duration = _duration(start, end, message.get("durationSeconds"))
    return NormalizedCall(
        type=event_type,
        idempotency_key=f"{key}:lifecycle",
        reason=reason,
        carrier_cause=reason,
        answered_at=start if answered else None,
        ended_at=end,
        duration_seconds=duration if answered else None,
        **common,
    )


def _transcript(message: Mapping[str, Any]) -> dict[str, Any] | None:
    artifact = json_dict(message.get("artifact"))
    text = json_str(artifact.get("transcript")) or json_str(message.get("transcript"))
    if text is None:
        return None
    summary = json_str(json_dict(message.get("analysis")).get("summary")) or json_str(message.get("summary"))
    return {"format": "text", "summary": summary, "text": text, "turns": None}


def normalize_vapi(body: Mapping[str, Any]) -> list[NormalizedCall]:
    """A Vapi server message to normalized calls: ``end-of-call-report`` gives one or two, others none."""
    message = body.get("message")
    message_type = json_str(message.get("type")) if isinstance(message, dict) else None
    if not isinstance(message, dict) or message_type is None:
        raise PayloadInvalid("the Vapi webhook needs message.type")
    if message_type != END_OF_CALL_REPORT:
        return []
    call = json_dict(message.get("call"))
    call_id = json_str(call.get("id"))
    if call_id is None:
        raise PayloadInvalid(f"{message_type} needs message.call.id")
    common = _common(message, call, call_id)
    key = f"{CARRIER}:{call_id}:{message_type}"
    return with_transcript(_lifecycle(message, common, key), _transcript(message), common, key)


class VapiAdapter:
    """HMAC ``x-signature`` over ``"{x-timestamp}.{body}"``, or the legacy ``X-Vapi-Secret`` header."""

    credential_names = CREDENTIAL_NAMES[Carrier.VAPI]

    def verify(self, callback: RawCallback, credentials: Mapping[str, str], now: datetime) -> None:
        secret = credential(credentials, "secret", "Vapi")
        signature = header_value(callback.headers, SIGNATURE_HEADER)
        legacy = header_value(callback.headers, SECRET_HEADER)
        if legacy is not None and _same(legacy, secret):
            return
        if signature is None:
            if legacy is None:
                raise SignatureInvalid("neither x-signature nor X-Vapi-Secret is present")
            raise SignatureInvalid("X-Vapi-Secret does not match")
        _verify_hmac(callback, secret, signature, now)

    def parse(self, callback: RawCallback) -> list[NormalizedCall]:
        return normalize_vapi(json_object(callback.body))
