"""Pure normalization of carrier callbacks into call fields (reference §6.2, §6.3)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from webhookd.models import isoformat

SCHEMA_VERSION = "2026-03-draft"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SEPARATORS = re.compile(r"[\s().\-]")
_DIGITS = re.compile(r"^[1-9]\d{6,14}$")


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
    return moment.astimezone(UTC)


def parse_int(raw: str | None) -> int | None:
    if raw is None or not raw.strip().lstrip("-").isdigit():
        return None
    return int(raw.strip())


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
