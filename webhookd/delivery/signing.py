"""Standard Webhooks signatures: ``v1,`` + base64 HMAC-SHA256 over ``{id}.{timestamp}.{body}``."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<signature>`` entry for the raw HMAC ``key``."""
    message = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers. Several keys (during a rotation) give several entries."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(key, msg_id, timestamp, body) for key in keys),
    }
