"""Telnyx TeXML status callbacks: Twilio-style form fields, signed with Telnyx's Ed25519.

Normalization reuses Twilio's (TeXML sends Twilio's status names) and adds the Telnyx
fields: ``CallInitiatedAt``, ``AnsweredTime``, ``EndTime``, ``HangupCause``, ``HangupSource``,
``CallSessionId``. The docs show the callbacks as JSON objects too (``"SequenceNumber": 0``), so a body
that is a JSON object is accepted alongside the form encoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from webhookd.exceptions import PayloadInvalid
from webhookd.ingest.base import RawCallback
from webhookd.ingest.normalize import NormalizedCall
from webhookd.ingest.telnyx import load_json, moment, verify_ed25519
from webhookd.ingest.twilio import decode_form, normalize_twilio_like
from webhookd.models import CREDENTIAL_NAMES, Carrier

_INT64 = range(-(2**63), 2**63)
_TERMINAL = {"completed", "busy", "no-answer", "failed", "canceled"}
_TWILIO_DIRECTIONS = {
    # TeXML callbacks carry no Direction in Telnyx's examples; they are status callbacks of calls
    # we placed, so a missing one means outbound (as the reference fixtures show).
    "": "outbound-api",
    "outbound": "outbound-api",
    "outbound-api": "outbound-api",
    "outbound-dial": "outbound-dial",
    "inbound": "inbound",
}


def _form_value(value: object) -> str | None:
    """A JSON value as the string the form encoding would carry; ``None`` drops the field."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def texml_fields(body: bytes) -> dict[str, str]:
    """The callback's fields, from a form body or a JSON object body."""
    if body.lstrip()[:1] != b"{":
        return dict(decode_form(body))
    loaded: Any = load_json(body)
    if not isinstance(loaded, dict):
        raise PayloadInvalid("the body must be a form or a JSON object")
    values = {name: _form_value(value) for name, value in loaded.items()}
    return {name: value for name, value in values.items() if value is not None}


def _twilio_fields(fields: Mapping[str, str]) -> dict[str, str]:
    prepared = dict(fields)
    direction = fields.get("Direction", "")
    prepared["Direction"] = _TWILIO_DIRECTIONS.get(direction.strip().lower(), direction)
    if "SipResponseCode" not in fields and "SipHangupCause" in fields:
        prepared["SipResponseCode"] = fields["SipHangupCause"]
    return prepared


def normalize_texml(fields: Mapping[str, str]) -> NormalizedCall:
    """TeXML status callback fields to a normalized call update."""
    try:
        call = normalize_twilio_like(_twilio_fields(fields), Carrier.TELNYX_TEXML.value)
    except (ValueError, OverflowError) as exc:  # a numeric or time field the shared parsers refuse
        raise PayloadInvalid(f"a field of the callback does not parse: {exc}") from None
    numbers = (call.sequence, call.duration_seconds, call.sip_code)
    if any(value is not None and value not in _INT64 for value in numbers):
        raise PayloadInvalid("SequenceNumber, CallDuration or the SIP code is out of range")
    terminal = call.status_raw in _TERMINAL
    return dataclasses.replace(
        call,
        started_at=moment(fields.get("CallInitiatedAt")),
        answered_at=moment(fields.get("AnsweredTime")) or call.answered_at,
        ended_at=(moment(fields.get("EndTime")) or call.ended_at) if terminal else None,
        carrier_cause=fields.get("HangupCause") or None,
        hangup_source=fields.get("HangupSource") or None,
        carrier_session_id=fields.get("CallSessionId") or None,
    )


class TelnyxTexmlAdapter:
    """Telnyx TeXML status callbacks. Query parameters are not signed, so they are not metadata."""

    credential_names = CREDENTIAL_NAMES[Carrier.TELNYX_TEXML]

    def verify(self, callback: RawCallback, credentials: Mapping[str, str], now: datetime) -> None:
        verify_ed25519(callback, credentials, now)

    def parse(self, callback: RawCallback) -> list[NormalizedCall]:
        return [normalize_texml(texml_fields(callback.body))]
