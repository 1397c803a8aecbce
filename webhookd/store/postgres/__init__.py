"""The PostgreSQL backend, for many processes on many machines: asyncpg, SKIP LOCKED claims."""

from __future__ import annotations

from webhookd.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
