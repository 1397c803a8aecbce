"""The group-commit writer on a real SQLite file: batching, combined writes, failure isolation, stop."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from webhookd.exceptions import Conflict, Overloaded, StorageUnavailable, StoreError
from webhookd.store.sqlite.writer import Combined, GroupCommitWriter

pytestmark = pytest.mark.anyio


def connect_to(path: Path) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER NOT NULL UNIQUE)")
        return conn

    return connect


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[GroupCommitWriter]:
    started = GroupCommitWriter(connect_to(tmp_path / "g.db"))
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


class Recorder:
    """A ``run_many`` that inserts its items and remembers how it was called."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, conn: sqlite3.Connection, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in items])
        return [v * 10 for v in items]


def insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def op(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return op


def stored(path: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT v FROM t ORDER BY v")]


async def hold_writer(writer: GroupCommitWriter) -> tuple[threading.Event, asyncio.Task[None]]:
    """Keep the writer thread busy until the returned event is set, so later writes queue up.

    ``submit`` puts a write on the queue before it returns, so once it has been called the write is
    queued behind the blocker: no need to wait for it."""
    release, busy = threading.Event(), threading.Event()

    def block(conn: sqlite3.Connection) -> None:
        busy.set()
        release.wait(10)

    task = asyncio.create_task(writer.call(block))
    while not busy.is_set():
        await asyncio.sleep(0.001)
    return release, task


async def test_writes_queued_together_share_one_call_of_run_many(writer: GroupCommitWriter) -> None:
    recorder = Recorder()
    release, blocker = await hold_writer(writer)
    pending = [asyncio.ensure_future(writer.submit(Combined(recorder, n))) for n in range(1, 31)]
    release.set()

    results = await asyncio.gather(*pending)
    await blocker

    assert results == [n * 10 for n in range(1, 31)]
    assert recorder.calls == [list(range(1, 31))]


async def test_a_plain_write_between_combined_ones_keeps_its_place(
    writer: GroupCommitWriter, tmp_path: Path
) -> None:
    recorder = Recorder()
    release, blocker = await hold_writer(writer)
    ops: list[Callable[[sqlite3.Connection], int]] = [
        Combined(recorder, 1),
        Combined(recorder, 2),
        insert(3),
        Combined(recorder, 4),
    ]
    pending = [asyncio.ensure_future(writer.submit(op)) for op in ops]
    release.set()

    assert await asyncio.gather(*pending) == [10, 20, 3, 40]
    await blocker
    assert recorder.calls == [[1, 2], [4]]
    assert stored(tmp_path / "g.db") == [1, 2, 3, 4]


async def test_a_failing_write_fails_alone_and_the_rest_of_its_batch_commits(
    writer: GroupCommitWriter, tmp_path: Path
) -> None:
    await writer.submit(insert(5))
    recorder = Recorder()
    release, blocker = await hold_writer(writer)
    pending = [asyncio.ensure_future(writer.submit(Combined(recorder, n))) for n in (4, 5, 6)]
    release.set()

    results = await asyncio.gather(*pending, return_exceptions=True)
    await blocker

    assert results[0] == 40 and results[2] == 60
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert recorder.calls[0] == [4, 5, 6]  # the group, rolled back to its savepoint, then each alone
    assert recorder.calls[1:] == [[4], [5], [6]]
    assert stored(tmp_path / "g.db") == [4, 5, 6]


def counting_commits(path: Path) -> tuple[Callable[[], sqlite3.Connection], list[str]]:
    commits: list[str] = []

    def connect() -> sqlite3.Connection:
        conn = connect_to(path)()
        conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        return conn

    return connect, commits


async def test_a_failing_plain_write_is_rolled_back_alone_and_its_batch_commits_once(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    connect, commits = counting_commits(path)
    writer = GroupCommitWriter(connect)
    await writer.start()

    def half_then_conflict(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES (100)")  # written, then undone with its savepoint
        raise Conflict("refused after writing")

    try:
        release, blocker = await hold_writer(writer)
        ops = [insert(1), insert(2), half_then_conflict, insert(3), insert(1)]
        pending = [asyncio.ensure_future(writer.submit(op)) for op in ops]
        release.set()
        results = await asyncio.gather(*pending, return_exceptions=True)
        await blocker
    finally:
        await writer.stop()

    assert results[:2] == [1, 2] and results[3] == 3
    assert isinstance(results[2], Conflict) and isinstance(results[4], sqlite3.IntegrityError)
    assert stored(path) == [1, 2, 3]
    assert commits == ["COMMIT"]


async def test_a_full_file_met_by_one_write_still_fails_its_whole_batch(tmp_path: Path) -> None:
    """Not one write's fault: the file is full for every write alike, so none is kept."""
    path = tmp_path / "g.db"
    connect, commits = counting_commits(path)
    writer = GroupCommitWriter(connect)
    await writer.start()

    def overflow(conn: sqlite3.Connection) -> None:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count={pages}")
        conn.execute("INSERT INTO t (v) VALUES (?)", (-1,))
        conn.execute("CREATE TABLE filler (b BLOB)")
        conn.execute("INSERT INTO filler VALUES (zeroblob(1000000))")

    try:
        release, blocker = await hold_writer(writer)
        pending = [asyncio.ensure_future(writer.submit(op)) for op in (insert(1), overflow, insert(3))]
        release.set()
        results = await asyncio.gather(*pending, return_exceptions=True)
        await blocker
    finally:
        await writer.stop()

    assert all(isinstance(r, StorageUnavailable) and "full" in str(r) for r in results), results
    assert stored(path) == []
    assert commits == []


def parked_at_commit(path: Path) -> tuple[Callable[[], sqlite3.Connection], threading.Event, threading.Event]:
    """A writer connection whose thread stops just before each COMMIT runs, until ``release`` is set.

    The trace callback fires as a statement starts, so while the thread waits there the batch's
    rows are written but not committed: the moment to look at what callers have been told."""
    committing, release = threading.Event(), threading.Event()

    def on_statement(sql: str) -> None:
        if sql == "COMMIT":
            committing.set()
            release.wait(10)

    def connect() -> sqlite3.Connection:
        conn = connect_to(path)()
        conn.set_trace_callback(on_statement)
        return conn

    return connect, committing, release


async def test_a_batch_commits_before_any_caller_hears_of_it(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    connect, committing, release = parked_at_commit(path)
    writer = GroupCommitWriter(connect)
    await writer.start()
    seen_on_resolve: dict[int, list[int]] = {}

    def look(n: int, future: asyncio.Future[int]) -> None:
        seen_on_resolve[n] = stored(path)  # another connection, at the moment the caller hears

    try:
        release_blocker, blocker = await hold_writer(writer)
        pending = [writer.submit(insert(n)) for n in range(50)]
        for n, future in enumerate(pending):
            future.add_done_callback(lambda done, n=n: look(n, done))
        release_blocker.set()
        while not committing.is_set():
            await asyncio.sleep(0.001)
        # Anything the thread handed to the loop before COMMIT started is already queued there:
        # two turns of the loop run it, and then any answer given too early would show.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not any(future.done() for future in pending)
        assert stored(path) == []

        release.set()
        assert sorted(await asyncio.gather(*pending)) == list(range(50))
        await blocker
        assert seen_on_resolve == {n: list(range(50)) for n in range(50)}
    finally:
        release.set()
        await writer.stop()


async def test_stop_finishes_what_was_queued_then_refuses_more(tmp_path: Path) -> None:
    writer = GroupCommitWriter(connect_to(tmp_path / "g.db"))
    await writer.start()
    pending = [asyncio.ensure_future(writer.submit(insert(n))) for n in range(20)]

    await writer.stop()

    assert sorted(await asyncio.gather(*pending)) == list(range(20))
    with pytest.raises(StoreError, match="not running"):
        await writer.submit(insert(99))


async def test_a_connection_that_cannot_open_fails_start(tmp_path: Path) -> None:
    def refuse() -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    writer = GroupCommitWriter(refuse)

    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await writer.start()
    with pytest.raises(StoreError, match="not running"):
        await writer.submit(insert(1))


class Abort(BaseException):
    """Not an Exception: what no write should raise, and what must still not hang anyone."""


async def test_a_write_raising_a_base_exception_fails_every_waiting_caller(tmp_path: Path) -> None:
    writer = GroupCommitWriter(connect_to(tmp_path / "g.db"))
    await writer.start()

    def abort(conn: sqlite3.Connection) -> None:
        raise Abort("boom")

    release, blocker = await hold_writer(writer)
    pending = [asyncio.ensure_future(writer.submit(op)) for op in (insert(1), abort, insert(3))]
    release.set()
    await blocker

    results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 5)
    assert all(isinstance(r, StoreError) and "stopped" in str(r) for r in results), results
    with pytest.raises(StoreError, match="not running"):
        await writer.submit(insert(4))
    await asyncio.wait_for(writer.stop(), 5)


async def test_a_call_carried_behind_a_batch_that_dies_is_answered(tmp_path: Path) -> None:
    """A lone call that ends a batch waits outside it for the next turn; if the batch kills the
    thread, that call must still hear so, not hang."""
    writer = GroupCommitWriter(connect_to(tmp_path / "g.db"))
    await writer.start()

    def abort(conn: sqlite3.Connection) -> None:
        raise Abort("boom")

    release, blocker = await hold_writer(writer)
    in_batch = [asyncio.ensure_future(writer.submit(op)) for op in (insert(1), abort)]
    carried = asyncio.ensure_future(writer.call(insert(2)))
    await asyncio.sleep(0)  # the call's task runs up to its enqueue
    release.set()
    await blocker

    results = await asyncio.wait_for(asyncio.gather(*in_batch, return_exceptions=True), 5)
    assert all(isinstance(r, StoreError) and "stopped" in str(r) for r in results), results
    with pytest.raises(StoreError, match="stopped"):
        await asyncio.wait_for(carried, 5)
    await asyncio.wait_for(writer.stop(), 5)


async def test_writes_past_max_pending_that_may_be_shed_are_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    writer = GroupCommitWriter(connect_to(path), max_pending=2)
    await writer.start()
    try:
        release, blocker = await hold_writer(writer)
        queued = [writer.submit(insert(n), shed=True) for n in (1, 2)]
        with pytest.raises(Overloaded, match="2 writes are waiting"):
            writer.submit(insert(3), shed=True)
        queued.append(writer.submit(insert(4)))  # the worker's writes are never shed
        release.set()
        await blocker

        assert await asyncio.gather(*queued) == [1, 2, 4]
        assert await writer.submit(insert(5), shed=True) == 5
    finally:
        await writer.stop()
    assert stored(path) == [1, 2, 4, 5]


async def test_stop_may_be_called_twice_at_once(writer: GroupCommitWriter) -> None:
    assert await asyncio.gather(writer.stop(), writer.stop()) == [None, None]


async def test_a_write_queued_while_the_connection_fails_to_open_is_answered(tmp_path: Path) -> None:
    opening = threading.Event()

    def slow_refusal() -> sqlite3.Connection:
        opening.set()
        threading.Event().wait(0.2)
        raise sqlite3.OperationalError("unable to open database file")

    writer = GroupCommitWriter(slow_refusal)
    starting = asyncio.ensure_future(writer.start())
    while not opening.is_set():
        await asyncio.sleep(0.001)
    queued = asyncio.ensure_future(writer.submit(insert(1)))

    with pytest.raises(sqlite3.OperationalError):
        await starting
    with pytest.raises(StoreError, match="could not open"):
        await asyncio.wait_for(queued, 5)


async def test_a_call_raising_stop_iteration_reaches_its_caller(writer: GroupCommitWriter) -> None:
    def exhausted(conn: sqlite3.Connection) -> None:
        next(iter(()))

    with pytest.raises(RuntimeError, match="StopIteration"):
        await asyncio.wait_for(writer.call(exhausted), 5)
    assert await writer.submit(insert(1)) == 1  # and the writer carries on


async def test_a_lock_held_elsewhere_fails_the_batch_without_retrying_each_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "g.db"

    def impatient() -> sqlite3.Connection:
        conn = connect_to(path)()
        conn.execute("PRAGMA busy_timeout=50")
        return conn

    writer = GroupCommitWriter(impatient)
    await writer.start()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        results = await asyncio.gather(*(writer.submit(insert(n)) for n in range(5)), return_exceptions=True)
        other.execute("ROLLBACK")

        # A lock held past busy_timeout is an outage of the file, not a fault of these writes.
        assert all(isinstance(r, StorageUnavailable) and "locked" in str(r) for r in results), results
        assert all(isinstance(r.__cause__, sqlite3.OperationalError) for r in results)
        assert "retrying one by one" not in caplog.text
        assert await writer.submit(insert(9)) == 9
    finally:
        other.close()
        await writer.stop()
