"""Secrets at rest: AES-GCM boxes, webhook secrets, the master key and its key file."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest

from webhookd.crypto import (
    SecretBox,
    decode_master_key,
    hash_api_key,
    load_or_create_key_file,
    master_key_from_settings,
    new_api_key,
    new_webhook_secret,
    subscription_secret_context,
    webhook_secret_key,
)
from webhookd.exceptions import ConfigError, CryptoError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
CONTEXT = subscription_secret_context("sub_01")


def test_secret_box_round_trips() -> None:
    box = SecretBox(KEY)

    blob = box.encrypt(b"whsec_plaintext", CONTEXT)

    assert b"whsec_plaintext" not in blob
    assert box.decrypt(blob, CONTEXT) == b"whsec_plaintext"


def test_secret_box_uses_a_fresh_nonce_each_time() -> None:
    box = SecretBox(KEY)

    assert box.encrypt(b"same", CONTEXT) != box.encrypt(b"same", CONTEXT)


def test_decrypt_with_another_context_raises_crypto_error() -> None:
    blob = SecretBox(KEY).encrypt(b"secret", CONTEXT)

    with pytest.raises(CryptoError):
        SecretBox(KEY).decrypt(blob, subscription_secret_context("sub_02"))


def test_decrypt_with_another_key_raises_crypto_error() -> None:
    blob = SecretBox(KEY).encrypt(b"secret", CONTEXT)

    with pytest.raises(CryptoError):
        SecretBox(OTHER_KEY).decrypt(blob, CONTEXT)


def test_decrypt_of_a_tampered_or_truncated_blob_raises_crypto_error() -> None:
    blob = SecretBox(KEY).encrypt(b"secret", CONTEXT)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])

    with pytest.raises(CryptoError):
        SecretBox(KEY).decrypt(tampered, CONTEXT)
    with pytest.raises(CryptoError):
        SecretBox(KEY).decrypt(blob[:5], CONTEXT)


def test_secret_box_refuses_a_key_that_is_not_32_bytes() -> None:
    with pytest.raises(ConfigError):
        SecretBox(b"too short")


def test_new_webhook_secret_is_whsec_and_base64_of_32_bytes() -> None:
    secret = new_webhook_secret()

    assert secret.startswith("whsec_")
    raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert len(raw) == 32
    assert webhook_secret_key(secret) == raw


def test_new_webhook_secrets_differ() -> None:
    assert new_webhook_secret() != new_webhook_secret()


def test_api_keys_are_prefixed_and_stored_as_sha256() -> None:
    key = new_api_key()

    assert key.startswith("whd_")
    assert hash_api_key(key) == hashlib.sha256(key.encode()).hexdigest()


def test_key_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "webhookd.key"

    key = load_or_create_key_file(path)

    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_is_reused_on_the_second_call(tmp_path: Path) -> None:
    path = tmp_path / "webhookd.key"

    first = load_or_create_key_file(path)
    second = load_or_create_key_file(path)

    assert first == second
    assert base64.b64decode(path.read_text().strip()) == first


def test_corrupt_key_file_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "webhookd.key"
    path.write_text("not a key\n")

    with pytest.raises(ConfigError, match=str(path)):
        load_or_create_key_file(path)


def test_decode_master_key_accepts_base64_of_32_bytes_with_whitespace() -> None:
    assert decode_master_key(" " + base64.b64encode(KEY).decode() + "\n") == KEY


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not base64 at all!",
        base64.b64encode(os.urandom(16)).decode(),
        base64.b64encode(b"x" * 33).decode(),
    ],
)
def test_decode_master_key_errors_are_config_errors(raw: str) -> None:
    with pytest.raises(ConfigError, match="WEBHOOKD_MASTER_KEY"):
        decode_master_key(raw)


def test_configured_master_key_wins_over_the_key_file(tmp_path: Path) -> None:
    configured = base64.b64encode(KEY).decode()

    assert master_key_from_settings(configured, tmp_path / "w.db") == KEY
    assert not (tmp_path / "webhookd.key").exists()


def test_without_a_master_key_the_key_file_sits_beside_the_database(tmp_path: Path) -> None:
    key = master_key_from_settings(None, tmp_path / "w.db")

    assert load_or_create_key_file(tmp_path / "webhookd.key") == key


def test_without_a_master_key_or_sqlite_there_is_no_key() -> None:
    with pytest.raises(ConfigError, match="WEBHOOKD_MASTER_KEY"):
        master_key_from_settings(None, None)
