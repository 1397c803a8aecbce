"""Retell webhooks: ``x-retell-signature`` and the ``{event, call}`` body.

``call_ended`` gives the lifecycle terminal (from ``disconnection_reason``) and, when the call has a
transcript, ``call.transcript.ready``. ``call_started`` and ``call_analyzed`` have no row in the table, so
they (and any other event) are acknowledged and produce nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
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
    json_number,
    json_object,
    json_str,
    with_transcript,
)
from webhookd.models import CREDENTIAL_NAMES, Carrier

CARRIER = Carrier.RETELL.value
SIGNATURE_HEADER = "x-retell-signature"
WINDOW_MS = 5 * 60 * 1000
"""The SDK's ``FIVE_MINUTES``: ``|now - v| > WINDOW_MS`` is refused."""
CALL_ENDED = "call_ended"
_SIGNATURE = re.compile(r"v=([0-9]{1,15}),d=([0-9a-fA-F]{64})")
_NO_ANSWER = {"dial_busy", "dial_no_answer"}
_FAILED = {"dial_failed", "invalid_destination"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def compute_signature(api_key: str, timestamp_ms: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``raw body + str(ms)`` under the Retell API key."""
    return hmac.new(api_key.encode(), body + timestamp_ms.encode(), hashlib.sha256).hexdigest()


def lifecycle_type(reason: str | None) -> str:
    """``disconnection_reason`` to the terminal type."""
    if reason in _NO_ANSWER:
        return "call.no_answer"
    return "call.failed" if reason in _FAILED else "call.completed"


def _leg_id(raw: object) -> str | None:
    """``telephony_identifier``: an object such as ``{"twilio_call_sid": ...}`` (or a bare string)."""
    if isinstance(raw, str):
        return raw or None
    identifiers = json_dict(raw)
    preferred = json_str(identifiers.get("twilio_call_sid"))
    return preferred or next((v for v in map(json_str, identifiers.values()) if v is not None), None)


def _transcript(call: Mapping[str, Any]) -> dict[str, Any] | None:
    """The plain-text transcript, else turns from ``transcript_object``; ``None`` when there is neither."""
    text = json_str(call.get("transcript"))
    if text is not None:
        return {"format": "text", "text": text, "turns": None}
    entries = call.get("transcript_object")
    turns = [
        {
            "role": json_str(entry.get("role")),
            "text": json_str(entry.get("content")),
            "offset_seconds": json_number(json_dict(_first(entry.get("words"))).get("start")),
        }
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict)
    ]
    return {"format": "turns", "text": None, "turns": turns} if turns else None


def _first(items: object) -> object:
    return items[0] if isinstance(items, list) and items else None


def _duration(start: datetime | None, end: datetime | None, duration_ms: object) -> int | None:
    if start is not None and end is not None and end >= start:
        return round((end - start).total_seconds())
    milliseconds = json_number(duration_ms)
    return None if milliseconds is None or milliseconds < 0 else json_int(milliseconds / 1000)


def _common(call: Mapping[str, Any], call_id: str, event: str) -> dict[str, Any]:
    caller, callee = json_str(call.get("from_number")), json_str(call.get("to_number"))
    direction = json_str(call.get("direction"))
    return {
        "carrier": CARRIER,
        "carrier_call_id": call_id,
        "status_raw": event,
        "occurred_at": epoch_time(call.get("end_timestamp"), milliseconds=True),
        "source_kind": "ai_platform",
        "direction": direction if direction in {"inbound", "outbound"} else None,
        "from_number": e164(caller),
        "from_raw": caller,
        "to_number": e164(callee),
        "to_raw": callee,
        "linked_carrier_call_id": _leg_id(call.get("telephony_identifier")),
        "client_ref": json_dict(call.get("metadata")) or None,
        "recording_url": json_str(call.get("recording_url")),
    }


def _lifecycle(call: Mapping[str, Any], common: dict[str, Any], key: str) -> NormalizedCall:
    reason = json_str(call.get("disconnection_reason"))
    event_type = lifecycle_type(reason)
    answered = event_type == "call.completed"
    start = epoch_time(call.get("start_timestamp"), milliseconds=True)
    duration = _duration(start, common["occurred_at"], call.get("duration_ms"))
    return NormalizedCall(
        type=event_type,
        idempotency_key=key,
        reason=reason,
        carrier_cause=reason,
        answered_at=start if answered else None,
        ended_at=common["occurred_at"],
        duration_seconds=duration if answered else None,
        **common,
    )


def normalize_retell(body: Mapping[str, Any]) -> list[NormalizedCall]:
    """A Retell webhook body to normalized calls: ``call_ended`` gives one or two, other events none."""
    event = json_str(body.get("event"))
    if event is None:
        raise PayloadInvalid("the Retell webhook has no event")
    if event != CALL_ENDED:
        return []
    call = body.get("call")
    call_id = json_str(call.get("call_id")) if isinstance(call, dict) else None
    if not isinstance(call, dict) or call_id is None:
        raise PayloadInvalid(f"{event} needs call.call_id")
    common = _common(call, call_id, event)
    key = f"{CARRIER}:{call_id}:{event}"
    return with_transcript(_lifecycle(call, common, key), _transcript(call), common, key)


class RetellAdapter:
    """``x-retell-signature: v=<unix ms>,d=<hex>`` over ``raw body + str(ms)``; ``{event, call}`` JSON."""

    credential_names = CREDENTIAL_NAMES[Carrier.RETELL]

    def verify(self, callback: RawCallback, credentials: Mapping[str, str], now: datetime) -> None:
        api_key = credential(credentials, "api_key", "Retell")
        raw = header_value(callback.headers, SIGNATURE_HEADER)
        if not raw:
            raise SignatureInvalid("the x-retell-signature header is missing")
        match = _SIGNATURE.fullmatch(raw.strip())
        if match is None:
            raise SignatureInvalid("x-retell-signature is not 'v=<unix ms>,d=<hex sha256>'")
        timestamp, digest = match.groups()
        now_ms = (now - _EPOCH) // timedelta(milliseconds=1)
        if abs(now_ms - int(timestamp)) > WINDOW_MS:
            raise SignatureInvalid("x-retell-signature is more than 5 minutes from now")
        expected = compute_signature(api_key, timestamp, callback.body)
        if not hmac.compare_digest(expected.encode(), digest.lower().encode()):
            raise SignatureInvalid("x-retell-signature does not match the body")

    def parse(self, callback: RawCallback) -> list[NormalizedCall]:
        return normalize_retell(json_object(callback.body))
