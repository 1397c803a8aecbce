"""Group commit on PostgreSQL: concurrent publishes and callbacks share one transaction and one commit.

One writer task per store drains a queue: whatever is queued while a transaction commits goes into
the next one, on one pooled connection held only while it runs. Each caller's future resolves only
after the commit that holds its write.

Each write (or run of combined writes) runs inside a savepoint of its own, so a write that fails is
rolled back alone and the rest of the batch still commits. An error that says the server cannot be
used fails the whole batch with :class:`StorageUnavailable`, and nothing of it is stored; a deadlock
or serialization failure runs the whole batch again, as a lone transaction would be.

The writes of a batch run in a fixed order (``order``), not in arrival order, so that two API nodes
committing batches at once take their row locks in the same order and never deadlock each other.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from webhookd.exceptions import Overloaded, StorageUnavailable, StoreError
from webhookd.store.availability import Availability
from webhookd.store.postgres.db import RETRYABLE, UNAVAILABLE, Connection, WorkNotifier, in_transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")
WriteOp = Callable[[Connection], Awaitable[Any]]

MAX_BATCH_OPS = 512


@dataclass(frozen=True, slots=True)
class Combined:
    """A write that can run together with others of its kind: a run of them in a batch is one
    call, ``run_many(conn, items)``, returning one result per item, in order (a few multi-row
    statements instead of a few per write). Alone, or retried alone, it is ``run_many(conn, [item])``."""

    run_many: Callable[[Connection, list[Any]], Awaitable[list[Any]]]
    item: Any

    async def __call__(self, conn: Connection) -> Any:
        (result,) = await self.run_many(conn, [self.item])
        return result


@dataclass(slots=True)
class _Request:
    op: WriteOp
    wakes: Callable[[Any], bool]
    """Whether the op's result is new due work (the transaction then NOTIFYs, once)."""
    order: tuple[Any, ...]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Result:
    value: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class _Batch:
    requests: list[_Request]
    results: list[_Result] = field(default_factory=list)


class GroupCommitWriter:
    """The writer task of one ``PostgresStore``.

    ``max_pending`` bounds the writes waiting for the task: past it, :meth:`submit` raises
    :class:`Overloaded` at once rather than queueing (publishes and callbacks are a client's,
    which it can retry)."""

    def __init__(
        self, pool: Any, notifier: WorkNotifier, health: Availability, *, max_pending: int | None = None
    ) -> None:
        self._pool, self._notifier, self._health = pool, notifier, health
        self._max_pending = max_pending
        self._pending: deque[_Request] = deque()
        self._queued = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="webhookd-postgres-writer")

    async def stop(self) -> None:
        """Commit every write queued so far, then end the task."""
        task = self._task
        if task is None:
            return
        self._closing = True
        self._queued.set()
        await asyncio.shield(task)
        self._task = None

    def submit(
        self, op: WriteOp, *, wakes: Callable[[Any], bool], order: tuple[Any, ...] = ()
    ) -> asyncio.Future[Any]:
        """Queue ``op`` for the next group transaction; the future resolves once that committed."""
        if self._task is None or self._closing:
            raise StoreError("the store is not open")
        if self._max_pending is not None and len(self._pending) >= self._max_pending:
            raise Overloaded(f"{self._max_pending} writes are waiting for the PostgreSQL writer already")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(op, wakes, order, future))
        self._queued.set()
        return future

    async def _serve(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._pending:
                count = min(len(self._pending), MAX_BATCH_OPS)
                batch = [self._pending.popleft() for _ in range(count)]
                # Python's sort is stable: writes with equal keys (one call's callbacks) keep their order.
                batch.sort(key=lambda request: request.order)
                try:
                    await self._commit(batch)
                except Exception as exc:  # a work listener's, after the batch was answered
                    logger.error(
                        "waking work listeners failed: %r", exc, extra={"action": "store.writer_error"}
                    )
            if self._closing:
                return

    async def _commit(self, requests: list[_Request]) -> None:
        """Run and commit one batch, then answer its callers (every one, whatever happened)."""
        results = [_Result(error=StoreError("the PostgreSQL writer failed"))] * len(requests)
        try:
            results = await self._attempts(requests)
        except StorageUnavailable as exc:
            self._health.refused(exc)
            results = [_Result(error=exc)] * len(requests)
        except Exception as exc:  # not any one write's error: the transaction's (its commit, say)
            logger.error("a group commit failed: %r", exc, extra={"action": "store.writer_error"})
            results = [_Result(error=exc)] * len(requests)
        else:
            self._health.answered()
            if _made_work(requests, results):
                self._notifier.wake()
        finally:  # even when waking a listener raised: no caller waits forever
            for request, result in zip(requests, results, strict=True):
                _settle(request.future, result)

    async def _attempts(self, requests: list[_Request]) -> list[_Result]:
        """The batch in one transaction, run again as :func:`in_transaction` runs any transaction."""

        async def run(conn: Connection) -> list[_Result]:
            results = await _run_in_order(conn, [request.op for request in requests])
            if _made_work(requests, results):
                await self._notifier.send(conn)
            return results

        return await in_transaction(self._pool, run)


def _made_work(requests: list[_Request], results: list[_Result]) -> bool:
    return any(r.error is None and q.wakes(r.value) for q, r in zip(requests, results, strict=True))


async def _run_in_order(conn: Connection, ops: Sequence[WriteOp]) -> list[_Result]:
    """Each op's result or error, in order; a run of :class:`Combined` ops of one kind makes one
    call, and if that call fails, each of them runs again alone to find the one at fault."""
    results: list[_Result] = []
    for _, run in itertools.groupby(ops, key=lambda op: op.run_many if isinstance(op, Combined) else op):
        group = list(run)
        if isinstance(group[0], Combined) and len(group) > 1:
            combined = await _isolated(conn, functools.partial(_combined, conn, group))
            if combined.error is None:
                results.extend(_Result(value) for value in combined.value)
                continue
        for op in group:
            results.append(await _isolated(conn, functools.partial(op, conn)))
    return results


async def _combined(conn: Connection, group: list[WriteOp]) -> list[Any]:
    first = group[0]
    assert isinstance(first, Combined)
    items = [op.item for op in group if isinstance(op, Combined)]
    values = await first.run_many(conn, items)
    if len(values) != len(group):
        raise StoreError(f"{len(group)} combined writes gave {len(values)} results")
    return values


async def _isolated(conn: Connection, run: Callable[[], Awaitable[Any]]) -> _Result:
    """``run()`` inside a savepoint: if it raises, what it wrote is rolled back and the error is its
    result. An error that says the server cannot be used, or that aborts the whole transaction
    (a deadlock), is raised: it is every write's, not this one's."""
    savepoint = conn.transaction()
    await savepoint.start()
    try:
        value = await run()
    except (*UNAVAILABLE, *RETRYABLE):
        raise
    except Exception as exc:
        await savepoint.rollback()
        return _Result(error=exc)
    await savepoint.commit()
    return _Result(value)


def _settle(future: asyncio.Future[Any], result: _Result) -> None:
    """Resolve a caller's future (a cancelled caller's write still happened, or not, as a whole)."""
    if future.done():
        return
    if result.error is not None:
        future.set_exception(result.error)
    else:
        future.set_result(result.value)
