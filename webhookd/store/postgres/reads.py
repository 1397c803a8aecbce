"""PostgreSQL reads: lookups, keyset-paged logs and the metrics scrape's counts, with row mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from webhookd.exceptions import StorageUnavailable, StoreError
from webhookd.models import DeliveryStatus
from webhookd.store.availability import Availability
from webhookd.store.base import OutboxStats
from webhookd.store.postgres.db import Connection, on_connection
from webhookd.store.reads import SharedReads, numbered
from webhookd.store.scheduling import OLDEST_WAITING
from webhookd.store.shared import SUBSCRIPTION_STATES, Rows, subscription_states

T = TypeVar("T")


def _as_is(moment: datetime) -> datetime:
    return moment


ROWS = Rows(_as_is, _as_is, lambda epoch: datetime.fromtimestamp(epoch, UTC), list)
"""Rows as PostgreSQL returns them (times come and go as aware datetimes, scopes as an array), as models."""


class PostgresReads(SharedReads):
    """The read half of ``PostgresStore``: each method is one or two queries on a pooled connection."""

    # date_part, not extract: its double precision divides faster than extract's numeric, and the
    # chart's query does it once for every attempt of the last 24 hours.
    _BUCKET = "floor(date_part('epoch', a.started_at - ?) / ?::integer)::integer"
    _BY_CALL = ""

    def __init__(self) -> None:
        self._pool: Any = None
        self._health = Availability("PostgreSQL")
        self._rows = ROWS

    @property
    def health(self) -> Availability:
        """Whether the database answers, as this store's operations found."""
        return self._health

    async def _run(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """``fn`` on a pooled connection, outside a transaction (reads, single statements)."""
        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            return await on_connection(self._pool, fn)
        except StorageUnavailable as exc:
            self._health.refused(exc)
            raise

    async def _read_one(self, sql: str, params: Sequence[Any]) -> Any | None:
        return await self._run(lambda conn: conn.fetchrow(numbered(sql), *params))

    async def _read_all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        found: list[Any] = await self._run(lambda conn: conn.fetch(numbered(sql), *params))
        return found

    async def _scan(self, turn: str, sql: str, params: Sequence[Any]) -> list[Any]:
        """Every process has its own pool: a list waits for a connection, not for a turn."""
        return await self._read_all(sql, params)


async def outbox_stats(conn: Connection, now: datetime) -> OutboxStats:
    counts = await conn.fetch("SELECT status, sum(n)::bigint FROM outbox_counts GROUP BY status")
    oldest: datetime | None = await conn.fetchval(OLDEST_WAITING)
    states = await conn.fetch(SUBSCRIPTION_STATES)
    age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
    by_status = {status.value: 0 for status in DeliveryStatus} | {row[0]: row[1] for row in counts}
    return OutboxStats(by_status, age, subscription_states(states))
