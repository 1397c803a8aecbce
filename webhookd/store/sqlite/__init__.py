"""The SQLite backend, the embedded default: one file, a group-commit writer, WAL readers."""

from __future__ import annotations

from webhookd.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
