"""Pure normalization of carrier callbacks into call fields: status maps and call fields."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from webhookd.exceptions import PayloadInvalid
from webhookd.inputs import json_problem
from webhookd.models import isoformat

SCHEMA_VERSION = "2026-03-draft"
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_INT = re.compile(r"^-?[0-9]{1,18}$")
_SEPARATORS = re.compile(r"[\s().\-]")
_DIGITS = re.compile(r"^[1-9][0-9]{6,14}$")


@dataclass(frozen=True, slots=True)
class NormalizedCall:
    """One carrier callback, normalized. ``type`` is ``None`` when it only updates call state."""

    type: str | None
    idempotency_key: str
    carrier: str
    carrier_call_id: str
    status_raw: str
    occurred_at: datetime | None
    source_kind: str = "carrier"
    direction: str | None = None
    from_number: str | None = None
    from_raw: str | None = None
    to_number: str | None = None
    to_raw: str | None = None
    reason: str | None = None
    sequence: int | None = None
    carrier_leg_id: str | None = None
    carrier_session_id: str | None = None
    carrier_parent_call_id: str | None = None
    linked_carrier_call_id: str | None = None
    carrier_event_id: str | None = None
    answered_by: str | None = None
    answered_by_raw: str | None = None
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: int | None = None
    sip_code: int | None = None
    hangup_source: str | None = None
    carrier_cause: str | None = None
    recording_url: str | None = None
    client_ref: dict[str, Any] | None = None
    transcript: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def event_data(self) -> dict[str, Any]:
        """The ``data`` object of the delivered event."""
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            name = {"from_number": "from", "to_number": "to"}.get(item.name, item.name)
            data[name] = isoformat(value) if isinstance(value, datetime) else value
        del data["type"], data["idempotency_key"]
        return data


def e164(raw: str | None, *, digits_have_country_code: bool = False) -> str | None:
    """``+E.164`` or ``None``. Never guesses a country code; SIP, client and anonymous give None."""
    if not raw:
        return None
    value = raw.strip()
    lowered = value.lower()
    if "@" in value or lowered.startswith(("sip:", "client:")) or lowered == "anonymous":
        return None
    compact = _SEPARATORS.sub("", value)
    if _E164.match(compact):
        return compact
    if digits_have_country_code and _DIGITS.match(compact):
        return "+" + compact
    return None


def parse_time(raw: str | None) -> datetime | None:
    """RFC 2822, ISO-8601 (``T`` or space separated, any fraction) to aware UTC; else ``None``."""
    if not raw:
        return None
    value = raw.strip()
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. year 1 with a positive offset: not a real event time
        return None


def parse_int(raw: str | None) -> int | None:
    """A whole number of at most 18 ASCII digits (it must fit JSON's 64 bits); else ``None``."""
    value = "" if raw is None else raw.strip()
    return int(value) if _INT.match(value) else None


def answered_by(raw: str | None) -> str | None:
    """Fold AMD results to ``human``, ``machine``, ``fax`` or ``unknown``."""
    if not raw:
        return None
    lowered = raw.lower()
    if lowered.startswith("human"):
        return "human"
    if lowered.startswith("machine"):
        return "machine"
    if lowered.startswith("fax"):
        return "fax"
    return "unknown"


# -- JSON callbacks (voice-AI platforms): typed reads of untrusted values -----------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def json_object(body: bytes) -> dict[str, Any]:
    """A UTF-8 JSON object body; anything else (bad bytes, other JSON types) is ``PayloadInvalid``."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadInvalid(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PayloadInvalid("the body is not a JSON object")
    check_json(body, value)
    return value


def check_json(body: bytes, value: object) -> None:
    """``PayloadInvalid`` if ``value``, parsed from the JSON ``body``, nests too deep or holds a NUL."""
    problem = json_problem(body, value)
    if problem is not None:
        raise PayloadInvalid(f"the body {problem}")


def json_dict(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def json_str(value: object) -> str | None:
    """``value`` if it is a non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None


def json_number(value: object) -> int | float | None:
    """``value`` if it is a finite number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def json_int(value: object) -> int | None:
    """A whole number: ints as they are, finite floats rounded; ``None`` if not one or beyond 64 bits."""
    number = json_number(value)
    if number is None:
        return None
    whole = round(number)
    return whole if -(2**63) <= whole < 2**63 else None


def epoch_time(value: object, *, milliseconds: bool = False) -> datetime | None:
    """Epoch seconds (or ms) as a number or digit string, or an ISO/RFC 2822 string, to aware UTC."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    number = json_number(value)
    try:
        if number is not None:
            return _EPOCH + (timedelta(milliseconds=number) if milliseconds else timedelta(seconds=number))
        return parse_time(value) if isinstance(value, str) else None
    except (OverflowError, ValueError):
        return None


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by case-insensitive name (Starlette's ``Headers`` is; a plain dict may not be)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((found for key, found in headers.items() if key.lower() == wanted), None)


def with_transcript(
    lifecycle: NormalizedCall, transcript: dict[str, Any] | None, common: Mapping[str, Any], report_key: str
) -> list[NormalizedCall]:
    """An AI platform's end-of-call report: its lifecycle event, and ``call.transcript.ready``
    (keyed ``<report key>:transcript``) when the report carries a transcript."""
    if transcript is None:
        return [lifecycle]
    key = f"{report_key}:transcript"
    ready = NormalizedCall(type="call.transcript.ready", idempotency_key=key, transcript=transcript, **common)
    return [lifecycle, ready]
