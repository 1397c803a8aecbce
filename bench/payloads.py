"""The event every benchmark publishes or sends: a realistic ``call.completed``."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

EVENT_TYPE = "call.completed"


def call_data(seq: int) -> dict[str, Any]:
    return {
        "call_id": f"c_{seq:010d}",
        "from": "+14155550100",
        "to": "+14155550199",
        "direction": "outbound",
        "duration_seconds": 47 + seq % 300,
        "carrier": "twilio",
        "agent_id": "agt_dental_frontdesk",
        "ended_reason": "customer_hangup",
        "recording_available": True,
    }


def publish_body(seq: int, **extra_data: Any) -> dict[str, Any]:
    """What a publisher POSTs to ``/api/v1/events``."""
    return {"type": EVENT_TYPE, "data": {**call_data(seq), **extra_data}}


def new_event_id() -> str:
    return f"evt_{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


def envelope(event_id: str, customer_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """What a receiver gets, shaped like webhookd's envelope (about 300 bytes for ``call_data``)."""
    return {
        "id": event_id,
        "type": EVENT_TYPE,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "customer_id": customer_id,
        "data": data,
    }
