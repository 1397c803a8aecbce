"""Twilio Programmable Voice status callbacks: ``X-Twilio-Signature`` and form fields."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from webhookd.exceptions import PayloadInvalid, SignatureInvalid
from webhookd.ingest.base import RawCallback, credential
from webhookd.ingest.normalize import NormalizedCall, answered_by, e164, parse_int, parse_time
from webhookd.models import CREDENTIAL_NAMES, Carrier

MAX_FORM_FIELDS = 500
_OUTBOUND = {"outbound-api", "outbound-dial", "trunking-terminating"}
_INBOUND = {"inbound", "trunking-originating"}
_TYPES = {
    "queued": "call.initiating",
    "initiated": "call.initiating",
    "ringing": "call.ringing",
    "in-progress": "call.in_progress",
    "completed": "call.completed",
    "busy": "call.no_answer",
    "no-answer": "call.no_answer",
    "failed": "call.failed",
}
_TERMINAL = {"completed", "busy", "no-answer", "failed", "canceled"}
_DECLINED_SIP = {600, 603}
_INVALID_NUMBER_SIP = {404, 410, 484, 604}


def decode_form(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadInvalid(f"the body is not a valid form: {exc}") from None


def url_variants(url: str) -> list[str]:
    """The URL as given, without its port, and with the default port (Twilio signs either)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc_bare = f"[{host}]" if ":" in host else host
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    variants = [url, urlunsplit(parts._replace(netloc=netloc_bare))]
    if default_port is not None:
        variants.append(urlunsplit(parts._replace(netloc=f"{netloc_bare}:{default_port}")))
    return list(dict.fromkeys(variants))


def signing_string(url: str, params: Sequence[tuple[str, str]]) -> str:
    """URL, then each parameter name with each of its distinct values, all sorted."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    return url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))


def compute_signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    message = signing_string(url, params).encode()
    return base64.b64encode(hmac.new(auth_token.encode(), message, hashlib.sha1).digest()).decode()


class TwilioAdapter:
    credential_names = CREDENTIAL_NAMES[Carrier.TWILIO]

    def verify(self, callback: RawCallback, credentials: Mapping[str, str], now: datetime) -> None:
        signature = callback.headers.get("x-twilio-signature", "")
        if not signature:
            raise SignatureInvalid("the X-Twilio-Signature header is missing")
        body_hash = dict(callback.query).get("bodySHA256")
        if body_hash is not None:
            # JSON variant: the body is bound by its hash in the signed URL; no params are appended.
            actual = hashlib.sha256(callback.body).hexdigest()
            if not hmac.compare_digest(actual, body_hash.lower()):
                raise SignatureInvalid("bodySHA256 does not match the body")
            params: list[tuple[str, str]] = []
        else:
            params = decode_form(callback.body)
        token = credential(credentials, "auth_token", "Twilio")
        matches = [
            hmac.compare_digest(compute_signature(token, url, params), signature)
            for url in url_variants(callback.url)
        ]
        if not any(matches):
            raise SignatureInvalid(
                "X-Twilio-Signature does not match; is WEBHOOKD_PUBLIC_BASE_URL the URL Twilio calls?"
            )

    def parse(self, callback: RawCallback) -> list[NormalizedCall]:
        fields = dict(decode_form(callback.body))
        return [normalize_twilio_like(fields, "twilio", metadata=_metadata(callback.query))]


def _metadata(query: Sequence[tuple[str, str]]) -> dict[str, str]:
    return {name: value for name, value in query if name != "bodySHA256"}


def _direction(raw: str) -> str | None:
    if raw in _OUTBOUND:
        return "outbound"
    return "inbound" if raw in _INBOUND else None


def _type_and_reason(status: str, direction: str | None, sip: int | None) -> tuple[str | None, str | None]:
    if status == "canceled":
        return (
            ("call.failed", "canceled") if direction == "outbound" else ("call.no_answer", "caller_abandoned")
        )
    reason = {
        "completed": "normal",
        "busy": "busy",
        "no-answer": "no_answer",
        "failed": "failed",
    }.get(status)
    if status == "no-answer" and sip in _DECLINED_SIP:
        reason = "declined"
    if status == "failed" and sip in _INVALID_NUMBER_SIP:
        reason = "invalid_number"
    return _TYPES.get(status), reason


def normalize_twilio_like(
    fields: Mapping[str, str], carrier: str, *, metadata: dict[str, str] | None = None
) -> NormalizedCall:
    """Twilio's (and TeXML's) status callback fields to a normalized call update."""
    call_sid, status = fields.get("CallSid", ""), fields.get("CallStatus", "").lower()
    if not call_sid or not status:
        raise PayloadInvalid("CallSid and CallStatus are required")
    occurred = parse_time(fields.get("Timestamp"))
    sequence, sip = (
        parse_int(fields.get("SequenceNumber")),
        parse_int(fields.get("SipResponseCode")),
    )
    direction = _direction(fields.get("Direction", ""))
    event_type, reason = _type_and_reason(status, direction, sip)
    terminal = status in _TERMINAL
    duration = parse_int(fields.get("CallDuration")) if terminal else None
    answered_at = occurred if status == "in-progress" else None
    if status == "completed" and occurred is not None and duration is not None:
        answered_at = occurred - timedelta(seconds=duration)
    seq_key = "na" if sequence is None else str(sequence)
    return NormalizedCall(
        type=event_type,
        idempotency_key=f"{carrier}:{fields.get('AccountSid', '')}:{call_sid}:{status}:{seq_key}",
        carrier=carrier,
        carrier_call_id=call_sid,
        status_raw=status,
        occurred_at=occurred,
        direction=direction,
        sequence=sequence,
        reason=reason,
        sip_code=sip,
        from_number=e164(fields.get("From")),
        from_raw=fields.get("From"),
        to_number=e164(fields.get("To")),
        to_raw=fields.get("To"),
        carrier_parent_call_id=fields.get("ParentCallSid") or None,
        answered_by=answered_by(fields.get("AnsweredBy")),
        answered_by_raw=fields.get("AnsweredBy") or None,
        answered_at=answered_at,
        ended_at=occurred if terminal else None,
        duration_seconds=duration,
        recording_url=fields.get("RecordingUrl") or None,
        metadata=metadata or {},
    )
