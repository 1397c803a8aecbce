"""Secrets: generating them, hashing API keys, and AES-GCM encryption at rest."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from webhookd.exceptions import ConfigError, CryptoError

WEBHOOK_SECRET_PREFIX = "whsec_"
API_KEY_PREFIX = "whd_"
MASTER_KEY_BYTES = 32
_NONCE_BYTES = 12


def new_webhook_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes: the Standard Webhooks secret format."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_secret_key(secret: str) -> bytes:
    """The raw HMAC key inside a ``whsec_`` secret."""
    return base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX))


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 of the key. Keys carry 256 random bits, so a fast hash is safe, and lookups are by hash."""
    return hash_token(key)


def hash_token(token: str) -> str:
    """SHA-256 of a random bearer token (an API key, a dashboard link's token): what is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_link_token() -> str:
    """A dashboard link's single-use token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def derive_key(master_key: bytes, purpose: str) -> bytes:
    """A 32-byte key for one ``purpose`` (such as signing dashboard sessions), derived from the master
    key with HKDF-SHA256: one secret to keep, and a key that leaks for one purpose opens no other."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=MASTER_KEY_BYTES, salt=None, info=purpose.encode())
    return hkdf.derive(master_key)


def subscription_secret_context(subscription_id: str) -> str:
    """The AES-GCM associated data that binds a webhook secret's ciphertext to its subscription."""
    return f"subscription-secret:{subscription_id}"


def subscription_headers_context(subscription_id: str) -> str:
    """The AES-GCM associated data of a subscription's custom headers."""
    return f"subscription-headers:{subscription_id}"


def callback_secret_context(customer_id: str) -> str:
    """The AES-GCM associated data of a customer's callback secret."""
    return f"callback-secret:{customer_id}"


def source_credentials_context(source_id: str) -> str:
    """The AES-GCM associated data that binds a source's credentials to the source."""
    return f"source-credentials:{source_id}"


class SecretBox:
    """AES-256-GCM with a random nonce. ``context`` binds a ciphertext to the row it belongs to."""

    def __init__(self, key: bytes) -> None:
        if len(key) != MASTER_KEY_BYTES:
            raise ConfigError(f"the master key must be {MASTER_KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def decrypt(self, blob: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError):
            raise CryptoError(
                f"cannot decrypt {context}: was the database written under another "
                "WEBHOOKD_MASTER_KEY or key file?"
            ) from None


def seal_headers(box: SecretBox, subscription_id: str, headers: Mapping[str, str]) -> bytes:
    """A subscription's custom headers as stored: encrypted, as their values may be credentials.
    None at all are ``b""``, which the stores keep as no headers."""
    if not headers:
        return b""
    return box.encrypt(orjson.dumps(dict(headers)), subscription_headers_context(subscription_id))


def open_headers(box: SecretBox, subscription_id: str, sealed: bytes | None) -> dict[str, str]:
    """The custom headers :func:`seal_headers` stored (none for ``None``)."""
    if not sealed:
        return {}
    found: dict[str, str] = orjson.loads(box.decrypt(sealed, subscription_headers_context(subscription_id)))
    return found


def decode_master_key(raw: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != MASTER_KEY_BYTES:
        raise ConfigError(
            "WEBHOOKD_MASTER_KEY must be base64 of 32 bytes; make one with: "
            "python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())'"
        )
    return key


def load_or_create_key_file(path: Path) -> bytes:
    """Read the master key file, creating it (mode 0600) with a new random key on first run."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        encoded = base64.b64encode(os.urandom(MASTER_KEY_BYTES))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; read theirs
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(encoded + b"\n")
    try:
        return decode_master_key(path.read_text())
    except ConfigError:
        raise ConfigError(f"key file {path} is not base64 of 32 bytes; restore it") from None


def master_key_from_settings(master_key: str | None, sqlite_path: Path | None) -> bytes:
    """The configured master key, or the key file beside the SQLite database (made on first run)."""
    if master_key:
        return decode_master_key(master_key)
    if sqlite_path is None:
        raise ConfigError("WEBHOOKD_MASTER_KEY is required when the database is not SQLite")
    return load_or_create_key_file(key_file_path(sqlite_path))


def key_file_path(sqlite_path: Path) -> Path:
    """Where the master key is kept when WEBHOOKD_MASTER_KEY is not set: beside the database."""
    return sqlite_path.with_name("webhookd.key")
