"""Plivo voice callbacks: ``X-Plivo-Signature-V3`` and form fields.

The signature is ``base64(HMAC-SHA256(auth_token, base + "." + nonce))``. ``base`` is built the way the
plivo SDK builds it (``plivo/utils/signature_v3.py``): ``scheme://host[:port]/path``, the URL query re-sorted,
then the sorted ``name + value`` concatenation of the decoded form fields. The docs' prose form
(``URL + "." + params``) is accepted as well; it differs from the SDK's only when the URL has no query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from urllib.parse import parse_qsl, urlparse, urlunparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from webhookd.exceptions import PayloadInvalid, SignatureInvalid
from webhookd.ingest.base import RawCallback, credential
from webhookd.ingest.normalize import NormalizedCall, e164
from webhookd.ingest.twilio import url_variants
from webhookd.models import CREDENTIAL_NAMES, Carrier

MAX_FORM_FIELDS = 500
MAX_DURATION_S = 10**9
SIGNATURE_HEADERS = ("x-plivo-signature-v3", "x-plivo-signature-ma-v3")
NONCE_HEADER = "x-plivo-signature-v3-nonce"
TIMEZONE_CREDENTIAL = "timezone"
"""Optional source credential: the IANA zone of the Plivo account (Console setting); UTC when absent."""

_SECONDS = re.compile(r"[0-9]{1,10}")
_CANCELED = {"cancel", "canceled", "cancelled"}
_TYPES: dict[str, tuple[str, str | None]] = {
    "ringing": ("call.ringing", None),
    "in-progress": ("call.in_progress", None),
    "completed": ("call.completed", "normal"),
    "busy": ("call.no_answer", "busy"),
    "no-answer": ("call.no_answer", "no_answer"),
    "timeout": ("call.no_answer", "timeout"),
    "failed": ("call.failed", "failed"),
}
_STATUSES = {*_TYPES, *_CANCELED}
_TERMINAL = _STATUSES - {"ringing", "in-progress"}
_HANGUP_SOURCES = {"caller": "caller", "callee": "callee", "plivo": "platform", "error": "platform"}


def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value whatever the case of its name (Starlette's headers are already case-blind)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((item for key, item in headers.items() if key.lower() == wanted), "")


def decode_form(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadInvalid(f"the body is not a valid form: {exc}") from None


# -- signature ---------------------------------------------------------------------------------


def _grouped(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Each name with its values sorted, names sorted: the order the SDK signs in."""
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return {name: sorted(grouped[name]) for name in sorted(grouped)}


def params_string(params: Sequence[tuple[str, str]]) -> str:
    return "".join(name + value for name, values in _grouped(params).items() for value in values)


def sdk_base_string(url: str, params: Sequence[tuple[str, str]]) -> str:
    """``construct_post_url`` of the plivo SDK (the nonce is appended later). The SDK fails on a query
    with non-ASCII values; here they are read as UTF-8."""
    parts = urlparse(url)
    base = urlunparse((parts.scheme, parts.netloc, parts.path, "", "", ""))
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(f"{name}={value}" for name, values in _grouped(pairs).items() for value in values)
    if not params:
        return f"{base}?{query}" if query else base
    return f"{base}?{query}" + (f".{params_string(params)}" if query else params_string(params))


def docs_base_string(url: str, params: Sequence[tuple[str, str]]) -> str:
    """The docs' prose form: the URL as called, then ``"." + params`` when there are any."""
    called = url.partition("#")[0]
    return f"{called}.{params_string(params)}" if params else called


def candidate_bases(url: str, params: Sequence[tuple[str, str]]) -> set[str]:
    """The SDK form and the docs form, for the URL as given, without and with its default port."""
    variants = url_variants(url)
    return {sdk_base_string(variant, params) for variant in variants} | {
        docs_base_string(variant, params) for variant in variants
    }


def compute_signature(auth_token: str, base: str, nonce: str) -> str:
    message = f"{base}.{nonce}".encode()
    return base64.b64encode(hmac.new(auth_token.encode(), message, hashlib.sha256).digest()).decode()


def _offered_signatures(headers: Mapping[str, str]) -> list[bytes]:
    """Every comma-separated signature of the V3 header and of the main-account (Ma) header."""
    offered = [part.strip() for name in SIGNATURE_HEADERS for part in header(headers, name).split(",")]
    return [part.encode("utf-8", "replace") for part in offered if part]


# -- adapter -----------------------------------------------------------------------------------


class PlivoAdapter:
    credential_names = CREDENTIAL_NAMES[Carrier.PLIVO]

    def verify(self, callback: RawCallback, credentials: Mapping[str, str], now: datetime) -> None:
        token = credential(credentials, "auth_token", "Plivo")
        offered, nonce = _offered_signatures(callback.headers), header(callback.headers, NONCE_HEADER)
        if not offered or not nonce:
            raise SignatureInvalid("the X-Plivo-Signature-V3 or X-Plivo-Signature-V3-Nonce header is missing")
        params = decode_form(callback.body)
        computed = [
            compute_signature(token, base, nonce).encode() for base in candidate_bases(callback.url, params)
        ]
        if not any([hmac.compare_digest(mine, theirs) for mine in computed for theirs in offered]):
            raise SignatureInvalid(
                "X-Plivo-Signature-V3 does not match; is WEBHOOKD_PUBLIC_BASE_URL the URL Plivo calls?"
            )

    def parse(
        self, callback: RawCallback, credentials: Mapping[str, str] | None = None
    ) -> list[NormalizedCall]:
        """``credentials`` is optional: only its ``timezone`` is read, for Plivo's naive times."""
        zone = account_zone((credentials or {}).get(TIMEZONE_CREDENTIAL))
        fields = dict(decode_form(callback.body))
        return normalize_plivo(fields, zone, metadata=dict(callback.query))


# -- normalization -----------------------------------------------------------------------------


def account_zone(name: str | None) -> tzinfo:
    # Plivo sends naive 'YYYY-MM-DD HH:MM:SS' times in the account's time zone (a Console setting),
    # which the callback does not name. Without a "timezone" credential they are taken as UTC.
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise PayloadInvalid(f"the source's timezone credential {name!r} is not an IANA time zone") from None


def local_time(raw: str | None, zone: tzinfo) -> datetime | None:
    """A Plivo time (naive, in ``zone``; an explicit offset wins) in UTC, or None."""
    if not raw or not raw.strip():
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _seconds(raw: str | None) -> int | None:
    # Not parse_int: str.isdigit() accepts characters such as '²' that int() refuses.
    if raw is None or not _SECONDS.fullmatch(raw.strip()):
        return None
    value = int(raw.strip())
    return value if value <= MAX_DURATION_S else None


def _type_and_reason(status: str, direction: str | None, fields: Mapping[str, str]) -> tuple[str, str | None]:
    if status in _CANCELED:
        if direction == "outbound":
            return "call.failed", "canceled"
        return "call.no_answer", "caller_abandoned"
    unallocated = (
        fields.get("HangupCauseName", "").strip().lower() == "unallocated number"
        or fields.get("HangupCause", "").strip().upper() == "UNALLOCATED_NUMBER"
    )
    if status == "failed" and unallocated:
        return "call.failed", "invalid_number"
    return _TYPES[status]


def _hangup_source(raw: str | None) -> str | None:
    if not raw:
        return None
    return _HANGUP_SOURCES.get(raw.strip().lower(), "unknown")


def normalize_plivo(
    fields: Mapping[str, str], zone: tzinfo = UTC, *, metadata: dict[str, str] | None = None
) -> list[NormalizedCall]:
    """One Plivo callback to zero or one update; callbacks without a call status (recordings, ...) give []."""
    call_id, status_raw = fields.get("CallUUID", ""), fields.get("CallStatus", "")
    if not call_id and not status_raw:
        raise PayloadInvalid("not a Plivo call callback: no CallUUID or CallStatus")
    if status_raw.lower() not in _STATUSES:
        return []
    if not call_id:
        raise PayloadInvalid("a Plivo call callback needs CallUUID")
    return [_call_update(fields, zone, metadata or {})]


def _times(fields: Mapping[str, str], zone: tzinfo, status: str) -> tuple[datetime | None, ...]:
    """``occurred_at``, ``started_at``, ``answered_at``, ``ended_at``."""
    session = local_time(fields.get("SessionStart"), zone)
    answered, ended = local_time(fields.get("AnswerTime"), zone), local_time(fields.get("EndTime"), zone)
    occurred = session
    if status in _TERMINAL:
        occurred = ended or session
    elif status == "in-progress":
        occurred = answered or session
    return (
        occurred,
        local_time(fields.get("StartTime"), zone),
        answered,
        ended if status in _TERMINAL else None,
    )


def _call_update(fields: Mapping[str, str], zone: tzinfo, metadata: dict[str, str]) -> NormalizedCall:
    call_id, status_raw = fields["CallUUID"], fields["CallStatus"]
    status = status_raw.lower()
    direction = fields.get("Direction", "").lower()
    direction_or_none = direction if direction in {"inbound", "outbound"} else None
    event_type, reason = _type_and_reason(status, direction_or_none, fields)
    terminal = status in _TERMINAL
    occurred, started, answered, ended = _times(fields, zone, status)
    from_raw, to_raw = fields.get("From") or None, fields.get("To") or None
    a_leg = fields.get("ALegUUID") or None
    return NormalizedCall(
        type=event_type,
        idempotency_key=f"plivo:{call_id}:{fields.get('Event') or status_raw}:{status_raw}",
        carrier=Carrier.PLIVO.value,
        carrier_call_id=call_id,
        status_raw=status_raw,
        occurred_at=occurred,
        started_at=started,
        answered_at=answered,
        ended_at=ended,
        direction=direction_or_none,
        from_number=e164(from_raw, digits_have_country_code=True),
        from_raw=from_raw,
        to_number=e164(to_raw, digits_have_country_code=True),
        to_raw=to_raw,
        reason=reason,
        carrier_parent_call_id=a_leg if a_leg != call_id else None,
        duration_seconds=_seconds(fields.get("Duration")) if terminal else None,
        hangup_source=_hangup_source(fields.get("HangupSource")) if terminal else None,
        carrier_cause=(fields.get("HangupCause") or None) if terminal else None,
        metadata=metadata,
    )
