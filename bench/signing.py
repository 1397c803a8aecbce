"""Standard Webhooks signing for the raw baselines, written independently of webhookd's."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os


def new_secret_key() -> bytes:
    return os.urandom(32)


def signed_headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    digest = hmac.new(key, b"%s.%d.%s" % (msg_id.encode(), timestamp, body), hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }
