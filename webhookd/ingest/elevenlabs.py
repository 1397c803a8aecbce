"""ElevenLabs Agents post-call webhooks: ``ElevenLabs-Signature`` and the JSON envelope.

The envelope is ``{type, event_timestamp (epoch s), data}``. ``post_call_transcription`` becomes
``call.transcript.ready``; ``call_initiation_failure`` becomes ``call.no_answer`` or ``call.failed``; every
other type (``post_call_audio``, ...) is acknowledged and produces nothing.
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
    json_number,
    json_object,
    json_str,
)
from webhookd.models import CREDENTIAL_NAMES, Carrier

CARRIER = Carrier.ELEVENLABS.value
SIGNATURE_HEADER = "elevenlabs-signature"
MAX_AGE_S = 30 * 60
"""The SDK refuses a ``t`` older than this."""
MAX_AHEAD_S = 5 * 60
"""The SDK has no future check; we allow this much clock skew."""
TRANSCRIPTION = "post_call_transcription"
INITIATION_FAILURE = "call_initiation_failure"
_NO_ANSWER_REASONS = {"busy", "no-answer", "no_answer"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def compute_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<t>." + body`` under the webhook secret."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _signature_parts(raw: str) -> tuple[str, list[str]]:
    """``t`` and every ``v0`` of ``t=<unix s>,v0=<hex>``; a malformed header is ``SignatureInvalid``."""
    timestamp, digests = "", []
    for part in raw.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = value.strip()
        elif name == "v0":
            digests.append(value.strip().lower())
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12) or not digests:
        raise SignatureInvalid("ElevenLabs-Signature is not 't=<unix seconds>,v0=<hex>'")
    return timestamp, digests


def _check_window(signed_at: int, now: datetime) -> None:
    now_s = (now - _EPOCH) // timedelta(seconds=1)
    if now_s - signed_at > MAX_AGE_S:
        raise SignatureInvalid("ElevenLabs-Signature is older than 30 minutes")
    if signed_at - now_s > MAX_AHEAD_S:
        raise SignatureInvalid("ElevenLabs-Signature is dated in the future")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _direction(raw: object) -> str | None:
    value = json_str(raw)
    if value is None:
        return None
    lowered = value.lower()
    if lowered.startswith("outbound"):
        return "outbound"
    return "inbound" if lowered == "inbound" else None


def _parties(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Direction, numbers and the carrier leg id, from ``metadata.phone_call`` or a failure's ``body``."""
    phone_call = json_dict(metadata.get("phone_call"))
    if phone_call:
        direction = _direction(phone_call.get("direction"))
        agent, external = (
            json_str(phone_call.get("agent_number")),
            json_str(phone_call.get("external_number")),
        )
        caller, callee = (agent, external) if direction == "outbound" else (external, agent)
        leg = json_str(phone_call.get("call_sid"))
    else:
        # call_initiation_failure: the telephony provider's own callback (Twilio fields, or SIP details).
        body = json_dict(metadata.get("body"))
        direction = _direction(body.get("Direction"))
        caller, callee = json_str(body.get("From")), json_str(body.get("To"))
        leg = json_str(body.get("CallSid")) or json_str(body.get("call_sid"))
    return {
        "direction": direction,
        "from_number": e164(caller),
        "from_raw": caller,
        "to_number": e164(callee),
        "to_raw": callee,
        "linked_carrier_call_id": leg,
    }


def _client_ref(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """Our dynamic variables, without ElevenLabs' own ``system__*`` ones."""
    initiation = json_dict(data.get("conversation_initiation_client_data"))
    variables = json_dict(initiation.get("dynamic_variables"))
    ours = {key: value for key, value in variables.items() if not key.startswith("system__")}
    return ours or None


def _transcript(data: Mapping[str, Any]) -> dict[str, Any]:
    entries = data.get("transcript")
    turns = [
        {
            "role": json_str(entry.get("role")),
            "text": _text(entry.get("message")),
            "offset_seconds": json_number(entry.get("time_in_call_secs")),
        }
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict)
    ]
    summary = json_str(json_dict(data.get("analysis")).get("transcript_summary"))
    return {"format": "turns", "summary": summary, "text": None, "turns": turns}


def _failure_type(reason: str | None) -> str:
    return "call.no_answer" if (reason or "").lower() in _NO_ANSWER_REASONS else "call.failed"


def _common(envelope: Mapping[str, Any], data: Mapping[str, Any], event_type: str) -> dict[str, Any]:
    conversation_id = json_str(data.get("conversation_id"))
    if conversation_id is None:
        raise PayloadInvalid(f"{event_type} needs data.conversation_id")
    return {
        "idempotency_key": f"{CARRIER}:{conversation_id}:{event_type}",
        "carrier": CARRIER,
        "carrier_call_id": conversation_id,
        "status_raw": event_type,
        "occurred_at": epoch_time(envelope.get("event_timestamp")),
        "source_kind": "ai_platform",
        "carrier_session_id": json_str(data.get("agent_id")),
        "client_ref": _client_ref(data),
        **_parties(json_dict(data.get("metadata"))),
    }


def normalize_elevenlabs(envelope: Mapping[str, Any]) -> list[NormalizedCall]:
    """An ElevenLabs webhook envelope to normalized calls (none for event types we do not map)."""
    event_type = json_str(envelope.get("type"))
    if event_type is None:
        raise PayloadInvalid("the ElevenLabs webhook has no type")
    if event_type not in {TRANSCRIPTION, INITIATION_FAILURE}:
        return []
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise PayloadInvalid(f"{event_type} needs a data object")
    common = _common(envelope, data, event_type)
    if event_type == TRANSCRIPTION:
        metadata = json_dict(data.get("metadata"))
        return [
            NormalizedCall(
                type="call.transcript.ready",
                started_at=epoch_time(metadata.get("start_time_unix_secs")),
                duration_seconds=json_int(metadata.get("call_duration_secs")),
                transcript=_transcript(data),
                **common,
            )
        ]
    reason = json_str(data.get("failure_reason"))
    return [
        NormalizedCall(
            type=_failure_type(reason),
            reason=reason,
            carrier_cause=reason,
            ended_at=common["occurred_at"],
            **common,
        )
    ]


class ElevenLabsAdapter:
    """``ElevenLabs-Signature: t=<unix s>,v0=<hex>`` over ``"<t>." + raw body``; post-call JSON."""

    credential_names = CREDENTIAL_NAMES[Carrier.ELEVENLABS]

    def verify(self, callback: RawCallback, credentials: Mapping[str, str], now: datetime) -> None:
        secret = credential(credentials, "webhook_secret", "ElevenLabs")
        raw = header_value(callback.headers, SIGNATURE_HEADER)
        if not raw:
            raise SignatureInvalid("the ElevenLabs-Signature header is missing")
        timestamp, digests = _signature_parts(raw)
        _check_window(int(timestamp), now)
        expected = compute_signature(secret, timestamp, callback.body).encode()
        if not any(hmac.compare_digest(expected, digest.encode(errors="replace")) for digest in digests):
            raise SignatureInvalid("ElevenLabs-Signature does not match the body")

    def parse(self, callback: RawCallback) -> list[NormalizedCall]:
        return normalize_elevenlabs(json_object(callback.body))
