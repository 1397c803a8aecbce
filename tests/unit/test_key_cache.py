"""``KeyCache`` over a real SQLite store: a revoked key leaves every cache on the file at once, the
revoking process's and the others', and a key's use is recorded at most once a ``KEY_USE_MARK_S``
per node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from webhookd.crypto import hash_api_key, new_api_key
from webhookd.models import ApiKey, Scope, new_id, utcnow
from webhookd.store.sqlite import SqliteStore
from webhookd.web import KeyCache

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "w.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def _key(store: SqliteStore) -> ApiKey:
    await store.ensure_customer("acme")
    key = ApiKey(new_id("key"), "acme", hash_api_key(new_api_key()), frozenset({Scope.ADMIN}), None, utcnow())
    await store.create_api_key(key)
    return key


async def test_a_revoked_key_leaves_every_cache_at_once_whoever_revoked_it(
    store: SqliteStore, tmp_path: Path
) -> None:
    key, other_key = await _key(store), await _key(store)
    another_process = SqliteStore(tmp_path / "w.db")  # as the CLI opens it beside the server
    await another_process.open()
    try:
        here = KeyCache(store)
        for cache_key in (key, other_key):
            assert await here.get(cache_key.key_hash) == cache_key

        await store.revoke_api_key(None, key.id, utcnow())
        first = await here.get(key.key_hash)
        await another_process.revoke_api_key(None, other_key.id, utcnow())
        second = await here.get(other_key.key_hash)
    finally:
        await another_process.close()

    assert first is not None and first.revoked_at is not None
    assert second is not None and second.revoked_at is not None


async def test_a_keys_use_is_due_once_per_node_until_the_mark_interval_passes(store: SqliteStore) -> None:
    first, second = KeyCache(store), KeyCache(store)

    assert [first.use_is_due("key_a"), first.use_is_due("key_a"), first.use_is_due("key_b")] == [
        True,
        False,
        True,
    ]
    assert second.use_is_due("key_a")  # each node records its own first use
