"""``KeyCache`` over a real SQLite store: a revoked key stays trusted from the cache until the
revoking node evicts it (other nodes: until the entry expires), and a key's use is recorded at most
once a ``KEY_USE_MARK_S`` per node."""

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


async def test_a_revoked_key_leaves_the_cache_when_evicted_or_when_its_entry_expires(
    store: SqliteStore,
) -> None:
    key = await _key(store)
    here, elsewhere, uncached = KeyCache(store), KeyCache(store), KeyCache(store, ttl_s=0)
    for cache in (here, elsewhere, uncached):
        assert await cache.get(key.key_hash) == key

    await store.revoke_api_key(None, key.id, utcnow())
    here.evict(key.key_hash)

    fresh = [await cache.get(key.key_hash) for cache in (here, elsewhere, uncached)]
    assert [k is not None and k.revoked_at is not None for k in fresh] == [True, False, True]


async def test_a_keys_use_is_due_once_per_node_until_the_mark_interval_passes(store: SqliteStore) -> None:
    first, second = KeyCache(store), KeyCache(store)

    assert [first.use_is_due("key_a"), first.use_is_due("key_a"), first.use_is_due("key_b")] == [
        True,
        False,
        True,
    ]
    assert second.use_is_due("key_a")  # each node records its own first use
