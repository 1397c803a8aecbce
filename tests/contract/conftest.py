"""The ``store`` fixture: every contract test runs once per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from webhookd.store.base import Store
from webhookd.store.memory import MemoryStore
from webhookd.store.sqlite import SqliteStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "w.db")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
