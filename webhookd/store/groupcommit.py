"""Group commit: many writers, one SQLite transaction and one fsync per batch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiosqlite

from webhookd.exceptions import StoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")
WriteOp = Callable[[aiosqlite.Connection], Awaitable[T]]

MAX_BATCH_OPS = 512


@dataclass(slots=True)
class _Pending:
    op: WriteOp[Any]
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommitWriter:
    """Runs write operations on one connection, many to a transaction.

    Whatever is queued while a transaction commits goes into the next one, so concurrent callers
    share one fsync. Each caller's future resolves only after its transaction committed. If a
    batch fails, its operations are retried one per transaction so one bad write fails alone.
    """

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhookd-sqlite-writer")

    async def stop(self) -> None:
        await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, op: WriteOp[T]) -> T:
        if self._task is None or self._task.done():
            raise StoreError("the SQLite writer is not running")
        pending = _Pending(op)
        self._queue.put_nowait(pending)
        result: T = await pending.future
        return result

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH_OPS and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit_batch(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            results = await self._transaction([item.op for item in batch])
        except Exception:
            if len(batch) == 1:
                await self._commit_alone(batch[0])
                return
            logger.warning(
                "group commit of %d writes failed; retrying one by one",
                len(batch),
                extra={"action": "store.batch_retry"},
            )
            for item in batch:
                await self._commit_alone(item)
            return
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    async def _commit_alone(self, item: _Pending) -> None:
        try:
            (result,) = await self._transaction([item.op])
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
        else:
            if not item.future.done():
                item.future.set_result(result)

    async def _transaction(self, ops: list[WriteOp[Any]]) -> list[Any]:
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            results = [await op(self._conn) for op in ops]
            await self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                await self._conn.execute("ROLLBACK")
            raise
        return results
