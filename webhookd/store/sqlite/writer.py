"""Group commit: many writers, one SQLite transaction and one fsync per batch.

The writer owns one ``sqlite3`` connection on one dedicated thread, and that thread drives
itself: it takes whatever writes are queued, runs them as one transaction, commits, hands the
results back to the event loop in one callback, and goes straight on to the next batch. The
event loop only enqueues and is woken with results, so the next commit never waits for a busy
loop to get round to starting it.

Each write of a batch runs inside a savepoint of its own, so a write that fails (a conflict)
is rolled back alone and the rest of the batch still commits once: one refused write cannot
turn a batch's one fsync into one per write.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from webhookd.exceptions import Overloaded, StorageUnavailable, StoreError
from webhookd.store.availability import Availability

logger = logging.getLogger(__name__)

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Connection], T]

MAX_BATCH_OPS = 512
# What SQLite answers when it cannot use the file for now, rather than refusing this one write: a
# lock held past busy_timeout, a read-only file, an I/O error, a file it cannot open, a full disk.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_FULL,
    }
)


@dataclass(frozen=True, slots=True)
class Combined:
    """A write that can run together with others of its kind.

    When a batch holds several in a row with the same ``run_many``, the writer makes one call,
    ``run_many(conn, items)``, which does all their work in a few statements and returns one
    result per item, in order. Alone (or retried alone), it is ``run_many(conn, [item])``.
    Each statement releases and retakes the GIL, so fewer statements per batch leave more of
    the interpreter to the request handlers.
    """

    run_many: Callable[[sqlite3.Connection, list[Any]], list[Any]]
    item: Any

    def __call__(self, conn: sqlite3.Connection) -> Any:
        (result,) = self.run_many(conn, [self.item])
        return result


@dataclass(frozen=True, slots=True)
class _Result:
    """One write's result, or the error that rolled it back to its savepoint."""

    value: Any = None
    error: Exception | None = None


@dataclass(slots=True)
class _Request:
    op: WriteOp[Any]
    batched: bool
    """A write to group with others in a transaction; otherwise it runs alone, as it is."""
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Outcome:
    """What a caller's future is to be resolved with, on the event loop."""

    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None
    wrote: bool = False
    """The write's transaction committed changed rows, so the file took new pages. A commit that
    changed nothing (a claim that found no work) says nothing of a full disk."""


class _Stop:
    """Queued by ``stop()``: finish what is ahead of it, then end the thread."""


_STOP = _Stop()


class GroupCommitWriter:
    """Runs write operations many to a transaction on the writer thread.

    Whatever is queued while a transaction commits goes into the next one, so concurrent callers
    share one fsync. Each caller's future resolves only after its transaction committed. A write
    that raises is rolled back to its savepoint and fails alone; only when the transaction itself
    is lost (or its commit fails) are the batch's writes retried one per transaction.

    ``max_pending`` bounds the writes waiting for the thread: past it, a write submitted with
    ``shed=True`` raises :class:`Overloaded` at once rather than queueing.

    A write refused because the file cannot be used for now raises :class:`StorageUnavailable`,
    counted in ``health``; a batch that committed changes tells ``health`` that writes work again.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        health: Availability | None = None,
        *,
        max_pending: int | None = None,
    ) -> None:
        self._connect = connect
        self._max_pending = max_pending
        self._health = health if health is not None else Availability("SQLite")
        self._conn: sqlite3.Connection | None = None
        self._requests: queue.SimpleQueue[_Request | _Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closing = False
        # Set by the thread when it can take no more writes; checked and set under the lock, so a
        # write is either refused at once or queued where the thread will answer it.
        self._gate = threading.Lock()
        self._dead = False
        self._in_flight: list[_Request] = []
        self._carried: _Request | _Stop | None = None

    async def start(self) -> None:
        """Start the thread, which opens the connection; the connection's errors raise here."""
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        opened: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(opened,), name="webhookd-sqlite-writer", daemon=True
        )
        self._thread.start()
        try:
            await opened
        except BaseException:
            await self.stop()
            raise

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer thread outside any batch (setup and migrations)."""
        result: T = await self._enqueue(fn, batched=False)
        return result

    def submit(self, op: WriteOp[T], *, shed: bool = False) -> asyncio.Future[T]:
        """Queue ``op`` for the next group transaction; the future resolves once that committed.

        With ``shed``, raise :class:`Overloaded` instead when ``max_pending`` writes wait already:
        for writes a client makes and can retry (publishes, callbacks), not for the worker's.

        A plain future rather than a coroutine: every publish comes through here, and each
        coroutine level costs the event loop once on the way in and again on every resume."""
        return self._enqueue(op, batched=True, shed=shed)

    def _enqueue(self, op: WriteOp[Any], *, batched: bool, shed: bool = False) -> asyncio.Future[Any]:
        with self._gate:
            if self._loop is None or self._thread is None or self._closing or self._dead:
                raise StoreError("the SQLite writer is not running")
            if shed and self._max_pending is not None and self._requests.qsize() >= self._max_pending:
                raise Overloaded(f"{self._max_pending} writes are waiting for the SQLite writer already")
            request = _Request(op, batched, self._loop.create_future())
            self._requests.put(request)
        return request.future

    async def stop(self) -> None:
        """Finish every write queued so far, close the connection and end the thread."""
        thread, stopped = self._thread, self._stopped
        if thread is None or stopped is None:
            return
        with self._gate:
            if not self._closing:
                self._closing = True
                self._requests.put(_STOP)
        await asyncio.shield(stopped)
        thread.join()
        self._thread = None

    # -- the writer thread ---------------------------------------------------------------------

    def _serve(self, opened: asyncio.Future[None]) -> None:
        try:
            self._conn = self._connect()
        except BaseException as exc:
            self._deliver_to(opened, exc)
            self._shut(StoreError(f"the SQLite writer could not open its connection: {exc}"))
            return
        self._deliver_to(opened, None)
        try:
            self._serve_batches(self._conn)
        except BaseException as exc:  # not from a write's own errors: those are its caller's
            logger.error("the SQLite writer stopped: %r", exc, extra={"action": "store.writer_error"})
            self._shut(StoreError(f"the SQLite writer stopped: {exc!r}"))
        else:
            self._shut(StoreError("the SQLite writer is not running"))

    def _serve_batches(self, conn: sqlite3.Connection) -> None:
        # The batch and the request carried over to the next one live on ``self`` so that
        # ``_shut`` answers them if a batch dies.
        while True:
            first = self._carried if self._carried is not None else self._requests.get()
            self._carried = None
            if isinstance(first, _Stop):
                return
            self._in_flight, self._carried = self._gather(first)
            self._deliver(self._run(conn, self._in_flight))
            self._in_flight = []
            if isinstance(self._carried, _Stop):
                return

    def _shut(self, error: StoreError) -> None:
        """Refuse new writes, answer every one still waiting with ``error``, and close."""
        with self._gate:
            self._dead = True
            waiting = self._in_flight
            if isinstance(self._carried, _Request):
                waiting.append(self._carried)
            self._in_flight, self._carried = [], None
            while True:
                try:
                    request = self._requests.get_nowait()
                except queue.Empty:
                    break
                if isinstance(request, _Request):
                    waiting.append(request)
        self._deliver([_Outcome(request.future, error=error) for request in waiting])
        self._close()

    def _gather(self, first: _Request) -> tuple[list[_Request], _Request | _Stop | None]:
        """``first`` and the batched writes queued behind it; also the request that ended the
        batch early (a lone call, or the stop), to run next."""
        batch = [first]
        while first.batched and len(batch) < MAX_BATCH_OPS:
            try:
                following = self._requests.get_nowait()
            except queue.Empty:
                break
            if isinstance(following, _Stop) or not following.batched:
                return batch, following
            batch.append(following)
        return batch, None

    def _run(self, conn: sqlite3.Connection, batch: list[_Request]) -> list[_Outcome]:
        if not batch[0].batched:
            return [_attempt(conn, batch[0], in_transaction=False)]
        changes = conn.total_changes
        try:
            results = _transaction(conn, [request.op for request in batch])
        except Exception as exc:  # the transaction is lost, or its commit failed
            if len(batch) == 1 or unavailable(exc) is not None:  # would fail every write alike
                return [_Outcome(request.future, error=exc) for request in batch]
            logger.warning(
                "group commit of %d writes failed; retrying one by one",
                len(batch),
                extra={"action": "store.batch_retry"},
            )
            return [_attempt(conn, request, in_transaction=True) for request in batch]
        wrote = conn.total_changes != changes
        return [
            _Outcome(request.future, result.value, result.error, wrote=wrote)
            for request, result in zip(batch, results, strict=True)
        ]

    def _deliver(self, outcomes: list[_Outcome]) -> None:
        self._call_on_loop(self._settle_writes, outcomes)

    def _settle_writes(self, outcomes: list[_Outcome]) -> None:
        """On the event loop: tell ``health`` what the writes met, then resolve their futures."""
        wrote = False
        for outcome in outcomes:
            wrote = wrote or outcome.wrote
            refusal = None if outcome.error is None else unavailable(outcome.error)
            if refusal is not None:
                self._health.refused(refusal)
                outcome.error = refusal
        if wrote:
            self._health.answered()
        _settle(outcomes)

    def _deliver_to(self, future: asyncio.Future[None], error: BaseException | None) -> None:
        self._call_on_loop(_settle, [_Outcome(future, error=error)])

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        stopped = self._stopped
        assert stopped is not None
        self._call_on_loop(_settle, [_Outcome(stopped)])

    def _call_on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _attempt(conn: sqlite3.Connection, request: _Request, *, in_transaction: bool) -> _Outcome:
    changes = conn.total_changes
    try:
        if in_transaction:
            (result,) = _transaction(conn, [request.op])
        else:
            result = _Result(request.op(conn))
    except Exception as exc:
        if conn.in_transaction:  # a setup call that failed half way must not leave one open
            conn.execute("ROLLBACK")
        return _Outcome(request.future, error=exc)
    wrote = in_transaction and conn.total_changes != changes
    return _Outcome(request.future, result.value, result.error, wrote=wrote)


def unavailable(exc: BaseException) -> StorageUnavailable | None:
    """``exc`` as :class:`StorageUnavailable` if it says SQLite cannot use its file for now
    (whatever was asked), else ``None``."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.Error) or code is None or code & 0xFF not in _UNAVAILABLE_CODES:
        return None
    refusal = StorageUnavailable(f"SQLite cannot use its database file: {exc}")
    refusal.__cause__ = exc
    return refusal


def _transaction(conn: sqlite3.Connection, ops: list[WriteOp[Any]]) -> list[_Result]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = _run_in_order(conn, ops)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def _run_in_order(conn: sqlite3.Connection, ops: list[WriteOp[Any]]) -> list[_Result]:
    """Each op's result or error, in order; a run of :class:`Combined` ops of one kind makes one
    call, and if that call fails, each of them runs again alone to find the one at fault."""
    results: list[_Result] = []
    for _, run in itertools.groupby(ops, key=lambda op: op.run_many if isinstance(op, Combined) else op):
        group = list(run)
        if isinstance(group[0], Combined) and len(group) > 1:
            combined = _isolated(conn, functools.partial(_run_combined, conn, cast(list[Combined], group)))
            if combined.error is None:
                results.extend(_Result(value) for value in combined.value)
                continue
        results.extend(_isolated(conn, functools.partial(op, conn)) for op in group)
    return results


def _run_combined(conn: sqlite3.Connection, group: list[Combined]) -> list[Any]:
    combined = group[0].run_many(conn, [op.item for op in group])
    if len(combined) != len(group):
        raise StoreError(f"{len(group)} combined writes gave {len(combined)} results")
    return combined


def _isolated(conn: sqlite3.Connection, run: Callable[[], Any]) -> _Result:
    """``run()`` inside a savepoint: if it raises, what it wrote is rolled back and the error is
    its result. An error that says the file cannot be used, or one after which SQLite rolled the
    whole transaction back, is raised: it is every write's, not this one's."""
    conn.execute("SAVEPOINT write")
    try:
        value = run()
    except Exception as exc:
        if unavailable(exc) is not None or not conn.in_transaction:
            raise
        conn.execute("ROLLBACK TO write")
        conn.execute("RELEASE write")
        return _Result(error=exc)
    conn.execute("RELEASE write")
    return _Result(value)


def _settle(outcomes: list[_Outcome]) -> None:
    """On the event loop: resolve each caller's future (a cancelled caller's write still happened,
    or not, as a whole)."""
    for outcome in outcomes:
        future = outcome.future
        if future.done():
            continue
        error = outcome.error
        if isinstance(error, StopIteration):  # a future refuses one
            error = RuntimeError(f"a write raised {error!r}")
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome.result)
