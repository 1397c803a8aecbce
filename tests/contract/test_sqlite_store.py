"""What only the SQLite store promises: durability on disk, migrations, pragmas, group commit."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from tests.contract.conftest import LIVE_WORKER
from tests.contract.test_store_contract import ACME, COMPLETED, OTHER, claim, make_event, outcome, subscribe
from webhookd.exceptions import Conflict
from webhookd.models import ApiKey, DashboardAccess, PublishResult, Scope, new_id, utcnow
from webhookd.store.base import SubscriptionUpdate
from webhookd.store.migrate import migration_files
from webhookd.store.sqlite import SqliteStore
from webhookd.store.sqlite import publish as sqlite_publish
from webhookd.store.sqlite.migrate import migrate_sqlite

pytestmark = pytest.mark.anyio


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "w.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(db_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def applied_migrations(path: Path) -> list[tuple[int, str, float]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(
            "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
        ).fetchall()


def shipped_migrations() -> list[tuple[int, str]]:
    return [(version, name) for version, name, _ in migration_files("sqlite")]


async def store_pragmas(store: SqliteStore, *names: str) -> set[tuple[object, ...]]:
    """``names`` as read on the writer's and on every read connection (private, read only here)."""
    assert store._writer is not None and store._readers is not None
    on_writer = await store._writer.call(
        lambda conn: tuple(conn.execute(f"PRAGMA {name}").fetchone()[0] for name in names)
    )
    seen = {on_writer}
    readers = store._readers.all()
    assert len(readers) == 2 + len(store._readers.lists.connections) >= 3
    for reader in readers:
        on_reader = []
        for name in names:
            async with reader.execute(f"PRAGMA {name}") as cursor:
                row = await cursor.fetchone()
                assert row is not None
                on_reader.append(row[0])
        seen.add(tuple(on_reader))
    return seen


def api_key(key_hash: str) -> ApiKey:
    return ApiKey(new_id("key"), ACME, key_hash, frozenset({Scope.ADMIN}), None, utcnow())


async def test_data_survives_close_and_reopen(db_path: Path) -> None:
    first = SqliteStore(db_path)
    await first.open()
    try:
        sub = await subscribe(first)
        published = await first.publish(make_event(idempotency_key="k1"))
    finally:
        await first.close()

    reopened = SqliteStore(db_path)
    await reopened.open()
    try:
        assert await reopened.get_subscription(ACME, sub.id) == sub
        jobs = await claim(reopened)
        assert [(j.event_id, j.subscription_id) for j in jobs] == [(published.event.id, sub.id)]
        repeat = await reopened.publish(make_event(idempotency_key="k1"))
        assert (repeat.created, repeat.event.id) == (False, published.event.id)
    finally:
        await reopened.close()


async def test_open_records_each_migration_in_schema_migrations(store: SqliteStore, db_path: Path) -> None:
    rows = applied_migrations(db_path)

    assert shipped_migrations()[0] == (1, "0001_init.sql")
    assert [(version, name) for version, name, _ in rows] == shipped_migrations()


async def test_reopening_applies_no_migration_again(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await store.close()
    before = applied_migrations(db_path)

    await store.open()
    await store.close()

    assert applied_migrations(db_path) == before
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        assert migrate_sqlite(conn) == []


def test_migrate_on_a_fresh_database_applies_every_shipped_migration(db_path: Path) -> None:
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        assert migrate_sqlite(conn) == [name for _, name in shipped_migrations()]


async def test_connections_use_wal_and_synchronous_full(store: SqliteStore) -> None:
    assert await store_pragmas(store, "journal_mode", "synchronous") == {("wal", 2)}


async def test_statement_journals_and_temporary_tables_stay_in_memory(store: SqliteStore) -> None:
    """With files, a statement journal that spills (a multi-row insert in a group transaction)
    costs a temporary file created and unlinked on the commit path."""
    assert await store_pragmas(store, "temp_store") == {(2,)}


async def test_concurrent_publishes_each_commit_with_their_deliveries(store: SqliteStore) -> None:
    first = await subscribe(store, url="https://hooks.example.com/a")
    second = await subscribe(store, url="https://hooks.example.com/b")
    events = [make_event(idempotency_key=f"k{n}") for n in range(200)]

    results = await asyncio.gather(*(store.publish(event) for event in events))

    assert all(r.created and r.deliveries == 2 for r in results)
    assert [r.event.id for r in results] == [e.id for e in events]
    jobs = await claim(store, limit=1000)
    assert len(jobs) == 400
    assert {(j.event_id, j.subscription_id) for j in jobs} == {
        (e.id, s.id) for e in events for s in (first, second)
    }


async def test_one_write_batch_of_mixed_plain_publishes_counts_each_group_apart(store: SqliteStore) -> None:
    """``publish_events`` in one transaction (as the writer runs a batch): plain events of several
    customers, types and delays, interleaved, each get their own group's fan-out and count."""
    acme = [await subscribe(store, url=f"https://hooks.example.com/{n}") for n in range(3)]
    other = await subscribe(store, OTHER, url="https://hooks.example.com/o")
    ringing = await subscribe(store, url="https://hooks.example.com/r", events=("call.ringing",))
    kinds = [(ACME, COMPLETED, 1.0), (OTHER, COMPLETED, 1.0), (ACME, "call.ringing", 1.0)]
    kinds += [(ACME, "call.failed", 1.0), (ACME, COMPLETED, 5.0)]
    batch = [(make_event(customer, kind), delay) for customer, kind, delay in kinds * 30]
    assert store._writer is not None  # private: one batch, exactly as the writer would run it

    def in_one_transaction(conn: sqlite3.Connection) -> list[PublishResult]:
        conn.execute("BEGIN IMMEDIATE")
        published = sqlite_publish.publish_events(conn, batch)
        conn.execute("COMMIT")
        return published

    results = await store._writer.call(in_one_transaction)

    wanted = {(ACME, COMPLETED): acme, (OTHER, COMPLETED): [other], (ACME, "call.ringing"): [ringing]}
    expected = {(e.id, s.id) for e, _ in batch for s in wanted.get((e.customer_id, e.type), [])}
    assert [r.event.id for r in results] == [e.id for e, _ in batch]
    assert [r.deliveries for r in results] == [len(wanted.get((e.customer_id, e.type), [])) for e, _ in batch]
    due = "SELECT event_id, subscription_id, next_attempt_at - created_at FROM deliveries"
    rows = await store._writer.call(lambda conn: conn.execute(due).fetchall())
    assert {(event_id, sub_id) for event_id, sub_id, _ in rows} == expected
    assert len(rows) == len(expected)
    delays = {e.id: delay for e, delay in batch}
    assert all(abs(due_in - delays[event_id]) < 1e-6 for event_id, _, due_in in rows)


async def test_concurrent_repeats_of_one_idempotency_key_store_one_event(store: SqliteStore) -> None:
    await subscribe(store)

    results = await asyncio.gather(*(store.publish(make_event(idempotency_key="same")) for _ in range(50)))

    created = [r for r in results if r.created]
    assert len(created) == 1
    assert {r.event.id for r in results} == {created[0].event.id}
    assert len(await claim(store)) == 1


async def test_a_v4_database_upgrades_to_an_idempotency_index_of_keyed_events_only(db_path: Path) -> None:
    """Migration 5 rebuilds the idempotency index as a partial one: events stored before it keep
    their keys' protection, and events without a key no longer take index entries."""
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at)")
        for version, name, sql in migration_files("sqlite"):
            if version <= 4:
                conn.executescript(f"{sql}\nINSERT INTO schema_migrations VALUES ({version}, '{name}', 0);")
        conn.execute("INSERT INTO customers (id, created_at) VALUES (?, 0)", (ACME,))
        for n, key in enumerate(["k1", None, None, "k2"]):
            conn.execute(
                "INSERT INTO events (id, customer_id, type, idempotency_key, payload, created_at)"
                " VALUES (?, ?, 'call.completed', ?, x'7b7d', 0)",
                (f"evt_old{n}", ACME, key),
            )
        conn.commit()
    upgraded = SqliteStore(db_path)
    await upgraded.open()
    try:
        again = await upgraded.publish(make_event(idempotency_key="k1"))
        fresh = await upgraded.publish(make_event(idempotency_key="k3"))
        plain = await upgraded.publish(make_event())
    finally:
        await upgraded.close()
    assert (again.created, again.event.id) == (False, "evt_old0")
    assert fresh.created and plain.created
    assert (5, "0005_partial_idempotency_index.sql") in [m[:2] for m in applied_migrations(db_path)]
    with closing(sqlite3.connect(db_path)) as conn:
        indexed = conn.execute(
            "SELECT count(*) FROM events INDEXED BY events_idempotency WHERE idempotency_key IS NOT NULL"
        ).fetchone()[0]
        cells = conn.execute("SELECT sum(ncell) FROM dbstat WHERE name = 'events_idempotency'").fetchone()[0]
    assert indexed == 3  # k1, k2, k3
    assert cells == 3  # and nothing for the three events without a key


async def test_a_v9_database_upgrades_to_attempts_that_name_their_subscription(db_path: Path) -> None:
    """Migration 10 gives the attempts stored before it their subscription, so the dashboard's
    24-hour chart and last attempt still count them."""
    now = utcnow().timestamp()
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at)")
        for version, name, sql in migration_files("sqlite"):
            if version <= 9:
                conn.executescript(f"{sql}\nINSERT INTO schema_migrations VALUES ({version}, '{name}', 0);")
        conn.executescript(
            f"""INSERT INTO customers (id, created_at) VALUES ('{ACME}', 0);
            INSERT INTO subscriptions (id, customer_id, url, events_key, secret, created_at, updated_at)
                VALUES ('sub_old', '{ACME}', 'http://x.example/h', 'call.completed', x'00', 0, 0);
            INSERT INTO events (id, customer_id, type, payload, created_at)
                VALUES ('evt_old', '{ACME}', 'call.completed', x'7b7d', {now});
            INSERT INTO deliveries (id, event_id, subscription_id, customer_id, status, attempts,
                created_at, updated_at) VALUES ('dlv_old', 'evt_old', 'sub_old', '{ACME}', 'failed', 1,
                {now}, {now});
            INSERT INTO attempts (delivery_id, attempt_no, started_at, duration_s, status_code,
                response_excerpt, succeeded) VALUES ('dlv_old', 1, {now}, 0.1, 500, x'', 0);"""
        )
        conn.commit()
    upgraded = SqliteStore(db_path)
    await upgraded.open()
    try:
        activity = await upgraded.subscription_activity(ACME, utcnow() - timedelta(hours=1), 3600)
    finally:
        await upgraded.close()
    assert [(t.subscription_id, t.attempts, t.succeeded) for t in activity.tallies] == [("sub_old", 1, 0)]
    assert activity.last_attempts["sub_old"].status_code == 500


async def test_a_v10_database_upgrades_to_links_that_say_what_they_open(db_path: Path) -> None:
    """Migration 12 rebuilds the dashboard links table (an operator's link has no customer): a
    customer's link made before it still opens that customer's dashboard, once; keys stay in force."""
    now = utcnow().timestamp()
    token_hash = hashlib.sha256(b"old link").hexdigest()
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at)")
        for version, name, sql in migration_files("sqlite"):
            if version <= 10:
                conn.executescript(f"{sql}\nINSERT INTO schema_migrations VALUES ({version}, '{name}', 0);")
        conn.executescript(
            f"""INSERT INTO customers (id, created_at) VALUES ('{ACME}', 0);
            INSERT INTO api_keys (id, customer_id, key_hash, scopes, created_at)
                VALUES ('key_old', '{ACME}', 'old-key-hash', 'admin', 0);
            INSERT INTO dashboard_links (token_hash, customer_id, created_at, expires_at)
                VALUES ('{token_hash}', '{ACME}', {now}, {now + 900});"""
        )
        conn.commit()
    upgraded = SqliteStore(db_path)
    await upgraded.open()
    try:
        opened = await upgraded.redeem_dashboard_link(token_hash, utcnow())
        again = await upgraded.redeem_dashboard_link(token_hash, utcnow())
        key = await upgraded.get_api_key("old-key-hash")
    finally:
        await upgraded.close()
    assert (opened, again) == (DashboardAccess.of_customer(ACME), None)
    assert key is not None and (key.id, key.revoked_at, key.last_used_at) == ("key_old", None, None)
    assert (12, "0012_operator_access.sql") in [m[:2] for m in applied_migrations(db_path)]


async def test_one_failing_write_in_a_batch_fails_alone(store: SqliteStore) -> None:
    await subscribe(store)
    key_hash = hashlib.sha256(b"whd_dup").hexdigest()
    await store.create_api_key(api_key(key_hash))
    events = [make_event() for _ in range(20)]

    results = await asyncio.gather(
        *(store.publish(event) for event in events[:10]),
        store.create_api_key(api_key(key_hash)),
        *(store.publish(event) for event in events[10:]),
        return_exceptions=True,
    )

    assert isinstance(results[10], sqlite3.IntegrityError)
    published = results[:10] + results[11:]
    assert all(not isinstance(r, BaseException) and r.deliveries == 1 for r in published)
    assert {j.event_id for j in await claim(store)} == {e.id for e in events}


class CommitCountingStore(SqliteStore):
    """A SQLite store whose writer connection counts the COMMITs it runs, and whose writer can be
    held busy so that the writes submitted meanwhile make one batch."""

    commits: list[str]

    def _connect_writer(self) -> sqlite3.Connection:
        conn = super()._connect_writer()
        self.commits = []
        # The trace callback runs on the writer thread; list.append is atomic there.
        conn.set_trace_callback(lambda sql: self.commits.append(sql) if sql == "COMMIT" else None)
        return conn

    async def held(self) -> tuple[threading.Event, asyncio.Future[None]]:
        """The writer thread busy outside any transaction until the returned event is set."""
        assert self._writer is not None
        release, busy = threading.Event(), threading.Event()

        def block(conn: sqlite3.Connection) -> None:
            busy.set()
            release.wait(10)

        blocker = asyncio.ensure_future(self._writer.call(block))
        while not busy.is_set():
            await asyncio.sleep(0.001)
        return release, blocker


async def test_a_conflicting_patch_among_many_publishes_leaves_their_batch_one_commit(db_path: Path) -> None:
    store = CommitCountingStore(db_path)
    await store.open()
    try:
        await subscribe(store, url="https://hooks.example.com/a")
        other = await subscribe(store, url="https://hooks.example.com/b")
        events = [make_event(idempotency_key=f"k{n}") for n in range(200)]
        release, blocker = await store.held()
        conflicting = SubscriptionUpdate(url="https://hooks.example.com/a")
        pending = [
            *(asyncio.ensure_future(store.publish(event)) for event in events[:100]),
            asyncio.ensure_future(store.update_subscription(ACME, other.id, conflicting)),
            *(asyncio.ensure_future(store.publish(event)) for event in events[100:]),
        ]
        await asyncio.sleep(0)  # every write above is queued behind the blocker once its task ran
        commits_before = len(store.commits)
        release.set()
        results = await asyncio.gather(*pending, return_exceptions=True)
        await blocker

        assert len(store.commits) - commits_before == 1
        assert isinstance(results[100], Conflict), results[100]
        published = results[:100] + results[101:]
        assert all(isinstance(r, PublishResult) and r.created and r.deliveries == 2 for r in published)
        assert {j.event_id for j in await claim(store, limit=1000)} == {e.id for e in events}
        assert await store.get_subscription(ACME, other.id) == other
    finally:
        await store.close()


@pytest.mark.anyio
async def test_the_wal_is_checkpointed_in_the_background(tmp_path: Path) -> None:
    """The writer never checkpoints inside a commit; a background task copies the WAL into the
    database file, so the file takes in the new pages within a couple of seconds."""
    from tests.contract.test_store_contract import make_event, subscribe

    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    try:
        await subscribe(store)
        await asyncio.gather(*[store.publish(make_event()) for _ in range(300)])
        before = (tmp_path / "w.db").stat().st_size
        for _ in range(40):
            await asyncio.sleep(0.1)
            if (tmp_path / "w.db").stat().st_size > before:
                break
        assert (tmp_path / "w.db").stat().st_size > before
    finally:
        await store.close()


def wal_restarts(db_path: Path) -> int:
    """The WAL header's checkpoint sequence number: it goes up each time the WAL restarts."""
    header = (db_path.parent / (db_path.name + "-wal")).read_bytes()[:16]
    return int.from_bytes(header[12:16], "big")


async def test_the_wal_restarts_although_writes_never_pause(store: SqliteStore, db_path: Path) -> None:
    """Without the writer's share of the checkpoint, steady writes keep SQLite from ever restarting
    the WAL, and its file grows without bound."""
    await subscribe(store)
    await store.publish(make_event())
    before = wal_restarts(db_path)
    stop = asyncio.Event()

    async def keep_publishing() -> None:
        while not stop.is_set():
            await store.publish(make_event())

    publishers = [asyncio.create_task(keep_publishing()) for _ in range(8)]
    try:
        for _ in range(4):
            await asyncio.sleep(0.05)
            await store.checkpoint()
    finally:
        stop.set()
        await asyncio.gather(*publishers)

    assert wal_restarts(db_path) >= before + 3


def _modes(db_path: Path) -> dict[str, int]:
    names = [db_path.name, f"{db_path.name}-wal", f"{db_path.name}-shm"]
    return {name: stat.S_IMODE((db_path.parent / name).stat().st_mode) for name in names}


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default umask, under which files are created world-readable (0644)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("loose_umask")
async def test_a_new_database_and_its_wal_files_are_private(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    try:
        await store.publish(make_event())  # the WAL and shared-memory files now exist
        assert _modes(db_path) == dict.fromkeys(_modes(db_path), 0o600)
    finally:
        await store.close()


@pytest.mark.usefixtures("loose_umask")
async def test_an_existing_world_readable_database_is_made_private(db_path: Path) -> None:
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
    db_path.chmod(0o644)
    store = SqliteStore(db_path)
    await store.open()
    try:
        await store.publish(make_event())
        assert _modes(db_path) == dict.fromkeys(_modes(db_path), 0o600)
    finally:
        await store.close()


async def claim_steps(store: SqliteStore) -> int:
    """SQLite VM steps the writer spends claiming what is due now (private, read only here)."""
    assert store._writer is not None
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0  # zero lets the statement go on

    await store._writer.call(lambda conn: conn.set_progress_handler(tick, 1))
    try:
        assert len(await claim(store)) == 1
    finally:
        await store._writer.call(lambda conn: conn.set_progress_handler(None, 1))
    return steps


async def one_due_after_history(path: Path, delivered: int) -> SqliteStore:
    """A store whose one subscription has ``delivered`` delivered deliveries and one more due."""
    store = SqliteStore(path)
    await store.open()
    await store.register_worker(LIVE_WORKER, utcnow())
    await subscribe(store)
    await asyncio.gather(*(store.publish(make_event()) for _ in range(delivered)))
    while jobs := await claim(store):
        await store.record_attempts([outcome(job, succeeded=True) for job in jobs])
    await store.publish(make_event())
    return store


async def test_a_claims_cost_does_not_grow_with_the_delivered_history(tmp_path: Path) -> None:
    # The ring walk that finds subscriptions with pending work must step through the pending
    # deliveries' index: through the full one it steps over every delivered row kept.
    fresh = await one_due_after_history(tmp_path / "fresh.db", 0)
    worn = await one_due_after_history(tmp_path / "worn.db", 2000)
    try:
        fresh_steps, worn_steps = await claim_steps(fresh), await claim_steps(worn)
    finally:
        await fresh.close()
        await worn.close()
    assert worn_steps < 2 * fresh_steps, (fresh_steps, worn_steps)
