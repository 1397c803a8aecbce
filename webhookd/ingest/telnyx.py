"""Telnyx Call Control (Voice API v2) webhooks: Ed25519 signatures and JSON events.

The Ed25519 check (``verify_ed25519``) is shared with the TeXML adapter, which Telnyx signs the same way.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from webhookd.exceptions import PayloadInvalid, SignatureInvalid
from webhookd.ingest.base import RawCallback
from webhookd.ingest.normalize import NormalizedCall, answered_by, check_json, e164, parse_time
from webhookd.inputs import json_problem
from webhookd.models import CREDENTIAL_NAMES, Carrier

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
TOLERANCE_S = 300
"""Reject when ``abs(now - telnyx-timestamp)`` exceeds this: stale and future alike."""

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIP_CODE = re.compile(r"[1-6][0-9]{2}")
_DIRECTIONS = {"incoming": "inbound", "inbound": "inbound", "outgoing": "outbound", "outbound": "outbound"}
_HANGUP = {
    "normal_clearing": ("call.completed", "normal"),
    "time_limit": ("call.completed", "time_limit"),
    "user_busy": ("call.no_answer", "busy"),
    "timeout": ("call.no_answer", "timeout"),
    "no_answer": ("call.no_answer", "no_answer"),
    "not_found": ("call.failed", "invalid_number"),
    "unspecified": ("call.failed", "unknown"),
}
_DECLINED_SIP = {600, 603}
_BUSY_SIP = 486
INITIATED, ANSWERED, BRIDGED, HANGUP = "call.initiated", "call.answered", "call.bridged", "call.hangup"
TRANSCRIPTION_SAVED = "call.recording.transcription.saved"
AMD_ENDED = frozenset({"call.machine.detection.ended", "call.machine.premium.detection.ended"})
KNOWN_EVENTS = frozenset({INITIATED, ANSWERED, BRIDGED, HANGUP, TRANSCRIPTION_SAVED, *AMD_ENDED})
"""Event types that update a call; every other type is acknowledged and ignored."""


# -- signature ----------------------------------------------------------------------------------


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by its lower-case name, whatever case the mapping uses."""
    value = headers.get(name)
    if value is not None:
        return value
    return next((v for k, v in headers.items() if k.lower() == name), None)


def public_key(credentials: Mapping[str, str]) -> Ed25519PublicKey:
    """The source's ``public_key``: base64 of a 32-byte Ed25519 public key."""
    try:
        raw = base64.b64decode(credentials.get("public_key", ""), validate=True)
        if len(raw) != 32:
            raise ValueError("not 32 bytes")
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SignatureInvalid("the source's public_key is not a base64 32-byte Ed25519 key") from None


def _signature(raw: str | None) -> bytes:
    try:
        signature = base64.b64decode(raw or "", validate=True)
    except ValueError:
        signature = b""
    if len(signature) != 64:
        raise SignatureInvalid(f"{SIGNATURE_HEADER} is missing or not the base64 of 64 bytes")
    return signature


def verify_ed25519(callback: RawCallback, credentials: Mapping[str, str], now: datetime) -> None:
    """Telnyx's Ed25519 signature over ``ASCII(telnyx-timestamp) + b"|" + raw body``, within 300 s."""
    signature = _signature(header(callback.headers, SIGNATURE_HEADER))
    timestamp = (header(callback.headers, TIMESTAMP_HEADER) or "").strip()
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureInvalid(f"{TIMESTAMP_HEADER} is missing or not Unix seconds")
    if abs(now.timestamp() - int(timestamp)) > TOLERANCE_S:
        raise SignatureInvalid(f"{TIMESTAMP_HEADER} is more than {TOLERANCE_S} s from now")
    try:
        public_key(credentials).verify(signature, timestamp.encode("ascii") + b"|" + callback.body)
    except InvalidSignature:
        raise SignatureInvalid(f"{SIGNATURE_HEADER} does not match the body and timestamp") from None


# -- small, total field readers ---------------------------------------------------------------------


def load_json(body: bytes) -> Any:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadInvalid(f"the body is not valid JSON: {exc}") from None
    check_json(body, value)
    return value


def text(obj: Mapping[str, Any], key: str) -> str | None:
    """A string field, or ``None`` when it is absent or of another type."""
    value = obj.get(key)
    return value if isinstance(value, str) else None


def moment(raw: object) -> datetime | None:
    """A carrier timestamp as aware UTC; ``None`` when absent, unparsable or out of range."""
    if not isinstance(raw, str):
        return None
    try:
        return parse_time(raw)
    except (OverflowError, ValueError):
        return None


def sip_code(raw: object) -> int | None:
    """A SIP response code (``"200"`` or 200); ``None`` for ``"unspecified"`` and anything else."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if isinstance(raw, str) and _SIP_CODE.fullmatch(raw.strip()):
        return int(raw.strip())
    return None


def client_ref(raw: object) -> dict[str, Any] | None:
    """Decoded base64 JSON ``client_state``; ``{"raw": value}`` when it is not base64 of a JSON object
    that could be stored (nested too deep or holding a NUL, see :func:`webhookd.inputs.json_problem`)."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        text = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        decoded = orjson.loads(text)
    except ValueError:
        return {"raw": raw}
    return decoded if isinstance(decoded, dict) and json_problem(text, decoded) is None else {"raw": raw}


def _required(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadInvalid(f"{where}.{key} is required and must be a non-empty string")
    return value


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadInvalid(f"{where} must be a JSON object")
    return value


# -- normalization ----------------------------------------------------------------------------------


def hangup_outcome(cause: str | None, sip: int | None, direction: str | None) -> tuple[str, str]:
    """The normalized type and reason of a ``call.hangup``, from its ``hangup_cause``."""
    if cause == "call_rejected":
        if sip in _DECLINED_SIP:
            return "call.no_answer", "declined"
        if sip == _BUSY_SIP:
            return "call.no_answer", "busy"
        return "call.failed", "rejected"
    if cause == "originator_cancel":
        # Same rule as Twilio's canceled: only a known outbound call was canceled by us.
        if direction == "outbound":
            return "call.failed", "canceled"
        return "call.no_answer", "caller_abandoned"
    return _HANGUP.get(cause or "", ("call.failed", "unknown"))


def _hangup(call: NormalizedCall, payload: Mapping[str, Any]) -> NormalizedCall:
    cause, sip = text(payload, "hangup_cause"), sip_code(payload.get("sip_hangup_cause"))
    event_type, reason = hangup_outcome(cause, sip, call.direction)
    return dataclasses.replace(
        call,
        type=event_type,
        reason=reason,
        carrier_cause=cause or None,
        hangup_source=text(payload, "hangup_source") or None,
        sip_code=sip,
        ended_at=moment(payload.get("end_time")) or call.occurred_at,
    )


def _transcript(call: NormalizedCall, payload: Mapping[str, Any]) -> NormalizedCall:
    transcript = payload.get("transcription_text")
    if not isinstance(transcript, str):
        raise PayloadInvalid("data.payload.transcription_text is required and must be a string")
    return dataclasses.replace(
        call, type="call.transcript.ready", transcript={"format": "text", "text": transcript}
    )


def _specialize(call: NormalizedCall, event_type: str, payload: Mapping[str, Any]) -> NormalizedCall:
    if event_type == INITIATED:
        return dataclasses.replace(call, type="call.initiating")
    if event_type == ANSWERED:
        return dataclasses.replace(call, type="call.in_progress", answered_at=call.occurred_at)
    if event_type == HANGUP:
        return _hangup(call, payload)
    if event_type == TRANSCRIPTION_SAVED:
        return _transcript(call, payload)
    if event_type in AMD_ENDED:
        result = text(payload, "result") or None
        return dataclasses.replace(call, answered_by=answered_by(result), answered_by_raw=result)
    return call  # call.bridged: state only


def normalize_telnyx(data: Mapping[str, Any], event_type: str) -> NormalizedCall:
    """One Call Control event (the envelope's ``data``) to a normalized call update."""
    event_id = _required(data, "id", "data")
    payload = _object(data.get("payload"), "data.payload")
    occurred = moment(data.get("occurred_at"))
    from_raw, to_raw = text(payload, "from"), text(payload, "to")
    call = NormalizedCall(
        type=None,
        idempotency_key=f"telnyx:{event_id}",
        carrier=Carrier.TELNYX.value,
        carrier_call_id=_required(payload, "call_control_id", "data.payload"),
        status_raw=event_type,
        occurred_at=occurred,
        direction=_DIRECTIONS.get(text(payload, "direction") or ""),
        from_number=e164(from_raw),
        from_raw=from_raw,
        to_number=e164(to_raw),
        to_raw=to_raw,
        carrier_leg_id=text(payload, "call_leg_id") or None,
        carrier_session_id=text(payload, "call_session_id") or None,
        carrier_event_id=event_id,
        started_at=moment(payload.get("start_time")),
        client_ref=client_ref(payload.get("client_state")),
    )
    return _specialize(call, event_type, payload)


class TelnyxAdapter:
    """Telnyx Call Control JSON webhooks. Query parameters are not signed, so they are not metadata."""

    credential_names = CREDENTIAL_NAMES[Carrier.TELNYX]

    def verify(self, callback: RawCallback, credentials: Mapping[str, str], now: datetime) -> None:
        verify_ed25519(callback, credentials, now)

    def parse(self, callback: RawCallback) -> list[NormalizedCall]:
        data = _object(_object(load_json(callback.body), "the body").get("data"), "data")
        event_type = data.get("event_type")
        if not isinstance(event_type, str) or not event_type:
            raise PayloadInvalid("data.event_type is required and must be a non-empty string")
        if event_type not in KNOWN_EVENTS:
            return []  # acknowledged, not an update: it carries no call status
        return [normalize_telnyx(data, event_type)]
