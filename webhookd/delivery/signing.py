"""Standard Webhooks signatures over ``{id}.{timestamp}.{body}``: ``v1,`` HMAC-SHA256, ``v1a,`` Ed25519."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from webhookd.crypto import new_webhook_secret, webhook_secret_key
from webhookd.models import SignatureScheme

SIGNING_KEY_PREFIX = "whsk_"
"""A v1a signing key: ``whsk_`` + base64 of the 32-byte Ed25519 private key (its seed)."""
PUBLIC_KEY_PREFIX = "whpk_"
"""A v1a public key: ``whpk_`` + base64 of the 32-byte Ed25519 public key."""
_ED25519_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class HmacKey:
    """A v1 key: the raw HMAC key inside a ``whsec_`` secret."""

    key: bytes

    def sign(self, content: bytes) -> str:
        return "v1," + base64.b64encode(hmac.new(self.key, content, hashlib.sha256).digest()).decode()


@dataclass(frozen=True, slots=True)
class Ed25519Key:
    """A v1a key: the Ed25519 private key inside a ``whsk_`` key."""

    key: Ed25519PrivateKey

    def sign(self, content: bytes) -> str:
        return "v1a," + base64.b64encode(self.key.sign(content)).decode()


SigningKey = HmacKey | Ed25519Key


def new_secret(scheme: SignatureScheme) -> str:
    """A new secret to store (encrypted) for ``scheme``: ``whsec_`` for v1, ``whsk_`` for v1a."""
    if scheme is SignatureScheme.V1A:
        return SIGNING_KEY_PREFIX + base64.b64encode(secrets.token_bytes(_ED25519_KEY_BYTES)).decode()
    return new_webhook_secret()


def signing_key(secret: str) -> SigningKey:
    """The key a stored secret holds. Its prefix says its scheme, so during a rotation from one
    scheme to the other the old and new secrets each sign by their own."""
    if not secret.startswith(SIGNING_KEY_PREFIX):
        return HmacKey(webhook_secret_key(secret))
    seed = base64.b64decode(secret.removeprefix(SIGNING_KEY_PREFIX))
    return Ed25519Key(Ed25519PrivateKey.from_private_bytes(seed))


def public_key(secret: str) -> str | None:
    """The ``whpk_`` key that verifies what a ``whsk_`` secret signs; ``None`` for a v1 secret,
    which verifies itself."""
    key = signing_key(secret)
    if isinstance(key, HmacKey):
        return None
    raw = key.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def sign(key: SigningKey, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<signature>`` or ``v1a,<signature>`` entry."""
    return key.sign(b"%s.%d.%s" % (msg_id.encode(), timestamp, body))


def webhook_headers(keys: Sequence[SigningKey], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers. Several keys (during a rotation) give several entries."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(key, msg_id, timestamp, body) for key in keys),
    }
