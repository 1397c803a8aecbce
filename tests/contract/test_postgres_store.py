"""What only the PostgreSQL store promises: migrations, and many processes sharing one database.

Two ``PostgresStore`` instances (two pools, two LISTEN connections) stand for two processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.contract.conftest import CIRCUIT, LIVE_WORKER, PROBE_AFTER_S, PostgresServer, open_postgres_store
from tests.contract.test_store_callbacks import counting, receipt
from tests.contract.test_store_circuit import failure
from tests.contract.test_store_contract import (
    ACME,
    COMPLETED,
    claim,
    later,
    make_event,
    make_subscription,
    outcome,
    subscribe,
)
from webhookd.exceptions import Overloaded, StorageUnavailable, StoreError
from webhookd.models import DeliveryJob, NewEvent, PublishResult, utcnow
from webhookd.store.base import PageRequest
from webhookd.store.migrate import migration_files
from webhookd.store.postgres import PostgresStore
from webhookd.store.postgres.db import WORK_CHANNEL
from webhookd.store.scheduling import ClaimRequest

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stores(postgres_server: PostgresServer) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one (emptied) schema, as two processes would have."""
    first = await open_postgres_store(postgres_server)
    second = PostgresStore(postgres_server.dsn, schema=postgres_server.schema, circuit=CIRCUIT)
    try:
        await second.open()
        await first.register_worker(LIVE_WORKER, utcnow())
        yield first, second
    finally:
        await second.close()
        await first.close()


async def query(server: PostgresServer, schema: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(server.dsn, server_settings={"search_path": schema})
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def shipped_migrations() -> list[tuple[int, str]]:
    return [(version, name) for version, name, _ in migration_files("postgres")]


# -- migrations and connecting -----------------------------------------------------------------


async def test_concurrent_opens_apply_each_migration_once_and_reopening_applies_none(
    postgres_server: PostgresServer,
) -> None:
    schema = postgres_server.new_schema()
    first, second = (
        PostgresStore(postgres_server.dsn, schema=schema),
        PostgresStore(postgres_server.dsn, schema=schema),
    )
    await asyncio.gather(first.open(), second.open())
    await asyncio.gather(first.close(), second.close())
    applied = await query(postgres_server, schema, "SELECT version, name, applied_at FROM schema_migrations")

    assert shipped_migrations()[0] == (1, "0001_init.sql")
    assert [(row[0], row[1]) for row in applied] == shipped_migrations()
    again = PostgresStore(postgres_server.dsn, schema=schema)
    await again.open()
    await again.close()
    assert (
        await query(postgres_server, schema, "SELECT version, name, applied_at FROM schema_migrations")
        == applied
    )


async def test_a_database_newer_than_the_code_is_refused(postgres_server: PostgresServer) -> None:
    schema = postgres_server.new_schema()
    store = PostgresStore(postgres_server.dsn, schema=schema)
    await store.open()
    await store.close()
    await query(
        postgres_server, schema, "INSERT INTO schema_migrations VALUES (9999, '9999_future.sql', now())"
    )

    with pytest.raises(StoreError, match="newer than this webhookd"):
        await store.open()


_V5_ROWS = """
INSERT INTO customers (id, created_at) VALUES ('acme', now());
INSERT INTO subscriptions (id, customer_id, url, events_key, secret, created_at, updated_at)
    VALUES ('sub_old', 'acme', 'http://x.example/h', 'call.completed', '\\x00', now(), now());
INSERT INTO events (id, customer_id, type, payload, created_at)
    VALUES ('evt_old', 'acme', 'call.completed', '\\x7b7d', now());
INSERT INTO deliveries (id, event_id, subscription_id, customer_id, status, attempts, created_at, updated_at)
    VALUES ('dlv_old', 'evt_old', 'sub_old', 'acme', 'failed', 1, now(), now());
INSERT INTO attempts (delivery_id, attempt_no, started_at, duration_s, status_code, response_excerpt,
    succeeded) VALUES ('dlv_old', 1, now(), 0.1, 500, '\\x', false);
"""


async def test_a_v5_database_upgrades_to_attempts_that_name_their_subscription(
    postgres_server: PostgresServer,
) -> None:
    """Migration 6 gives the attempts stored before it their subscription, so the dashboard's
    24-hour chart and last attempt still count them."""
    schema = postgres_server.new_schema()
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}")
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL)"
        )
        for version, name, sql in migration_files("postgres"):
            if version <= 5:
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2, now())", version, name)
        await conn.execute(_V5_ROWS)
    finally:
        await conn.close()
    store = PostgresStore(postgres_server.dsn, schema=schema)
    await store.open()
    try:
        activity = await store.subscription_activity("acme", utcnow() - timedelta(hours=1), 3600)
    finally:
        await store.close()
    assert [(t.subscription_id, t.attempts, t.succeeded) for t in activity.tallies] == [("sub_old", 1, 0)]
    assert activity.last_attempts["sub_old"].status_code == 500


async def test_an_unreachable_server_is_a_store_error_naming_it() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test")

    with pytest.raises(StoreError, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:1"):
        await store.open()


def test_a_schema_that_is_not_a_plain_name_is_refused() -> None:
    with pytest.raises(ValueError, match="schema name"):
        PostgresStore("postgresql://localhost/test", schema='x"; DROP TABLE events; --')


# -- many processes, one database --------------------------------------------------------------


async def _claim_until_all_taken(
    store: PostgresStore, worker: str, at: datetime, taken: list[DeliveryJob], total: int
) -> list[DeliveryJob]:
    """Claim until the two stores have taken ``total`` between them: one claim can come back empty
    while the other store is filling the same subscriptions."""
    claimed: list[DeliveryJob] = []
    await store.register_worker(worker, at)
    for _ in range(10 * total):
        if len(taken) >= total:
            break
        jobs = await store.claim_deliveries(ClaimRequest(worker, 7, 1000, at))
        claimed += jobs
        taken += jobs
    return claimed


async def test_two_stores_claiming_at_once_never_get_the_same_delivery(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    for n in range(4):
        await subscribe(a, url=f"https://hooks.example.com/{n}")
    published = await asyncio.gather(*(a.publish(make_event()) for _ in range(50)))

    at = utcnow()
    taken: list[DeliveryJob] = []
    by_a, by_b = await asyncio.gather(
        _claim_until_all_taken(a, "wkr_a", at, taken, 200), _claim_until_all_taken(b, "wkr_b", at, taken, 200)
    )
    ids = [job.delivery_id for job in by_a + by_b]

    assert sum(r.deliveries for r in published) == 200
    assert len(ids) == len(set(ids)) == 200
    assert by_a and by_b  # both took part


async def test_two_concurrent_failures_on_one_generation_count_once(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    sub = await subscribe(a)
    for _ in range(4):
        await a.publish(make_event())
    jobs = await claim(a)
    assert len(jobs) == 4

    await asyncio.gather(
        *(s.record_attempts([failure(job)]) for s, job in zip((a, b, a, b), jobs, strict=True))
    )

    found = await b.get_subscription(ACME, sub.id)
    assert found is not None and found.failure_count == 1
    (probe,) = await claim(b, later(PROBE_AFTER_S + 1))
    await a.record_attempts([failure(probe)])  # claimed under the one generation that moved
    found = await b.get_subscription(ACME, sub.id)
    assert found is not None and found.failure_count == 2


async def test_stores_claiming_at_once_claim_one_probe_per_failing_subscription(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    subs = [await subscribe(a, url=f"https://hooks.example.com/{n}") for n in range(8)]
    for _ in range(5):
        await a.publish(make_event())
    firsts = await claim(a, limit=1000)
    await a.record_attempts([failure(job) for job in firsts])

    probes = await asyncio.gather(*(claim(s, later(11)) for s in (a, b) * 10))

    claimed = [job.subscription_id for jobs in probes for job in jobs]
    assert sorted(claimed) == sorted(sub.id for sub in subs)


async def test_no_probe_is_claimed_for_a_subscription_another_process_is_claiming_for(
    postgres_server: PostgresServer, stores: tuple[PostgresStore, PostgresStore]
) -> None:
    a, _ = stores
    sub = await subscribe(a)
    for _ in range(3):
        await a.publish(make_event())
    (first,) = await claim(a, limit=1)
    await a.record_attempts([failure(first)])

    other = await asyncpg.connect(
        postgres_server.dsn, server_settings={"search_path": postgres_server.schema}
    )
    try:
        async with other.transaction():  # another process, between locking the row and claiming
            await other.execute("SELECT 1 FROM subscriptions WHERE id = $1 FOR NO KEY UPDATE", sub.id)
            assert await asyncio.wait_for(claim(a, later(11)), timeout=5) == []
    finally:
        await other.close()
    assert len(await claim(a, later(11))) == 1


async def test_notify_wakes_a_listener_of_another_store(stores: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = stores
    woken = asyncio.Event()
    b.add_work_listener(woken.set)
    await subscribe(a)

    await a.publish(make_event())

    await asyncio.wait_for(woken.wait(), timeout=5)


async def test_a_store_does_not_wake_itself_twice(stores: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = stores
    calls: list[None] = []
    a.add_work_listener(lambda: calls.append(None))
    woken = asyncio.Event()
    b.add_work_listener(woken.set)
    await subscribe(a)

    await a.publish(make_event())
    await asyncio.wait_for(woken.wait(), timeout=5)  # by then a's own notification came back too
    await asyncio.sleep(0.05)

    assert len(calls) == 1


async def test_concurrent_idempotent_creates_make_one_subscription(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    await a.ensure_customer(ACME)

    results = await asyncio.gather(
        *(s.create_subscription(make_subscription(events=(COMPLETED, "call.failed"))) for s in (a, b) * 10)
    )

    assert sum(r.created for r in results) == 1
    assert len({r.subscription.id for r in results}) == 1
    assert len((await a.list_subscriptions(ACME, PageRequest(10))).items) == 1


async def test_concurrent_publishes_of_one_idempotency_key_store_one_event(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    await subscribe(a)

    results = await asyncio.gather(*(s.publish(make_event(idempotency_key="same")) for s in (a, b) * 10))

    assert sum(r.created for r in results) == 1
    assert len({r.event.id for r in results}) == 1
    assert len(await claim(a)) == 1


async def test_concurrent_record_callback_of_one_key_has_one_winner(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    await subscribe(a)
    decide, seen = counting(emit=True)

    outcomes = await asyncio.gather(*(s.record_callback(receipt("k1"), decide) for s in (a, b) * 5))

    assert sum(not o.duplicate for o in outcomes) == 1
    assert seen == [None]
    assert len(await claim(b)) == 1


async def test_concurrent_callbacks_of_one_call_take_turns(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    decide, seen = counting(emit=False)

    await asyncio.gather(*(s.record_callback(receipt(f"k{n}"), decide) for n, s in enumerate((a, b) * 5)))

    assert sorted((state or {}).get("count", 0) for state in seen) == list(range(10))


async def test_publishes_racing_a_counted_failure_leave_nothing_pending_behind_it(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    await subscribe(a)
    await a.publish(make_event())
    (job,) = await claim(a)

    await asyncio.gather(
        *(b.publish(make_event()) for _ in range(20)),
        a.record_attempts([failure(job)]),
        *(b.publish(make_event()) for _ in range(20)),
    )

    stats = await a.outbox_stats(utcnow())
    assert stats.subscriptions_by_state["failing"] == 1
    assert stats.deliveries_by_status["pending"] == 0
    assert stats.deliveries_by_status["held"] == 41  # the 40 new ones and the retry of the failed one


async def test_outbox_stats_count_by_status_and_age_the_oldest_due(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    await subscribe(a, url="https://hooks.example.com/a")
    await subscribe(a, url="https://hooks.example.com/b")
    for _ in range(3):
        await a.publish(make_event())
    first, second, *_ = await claim(b, limit=2)
    await b.record_attempts([outcome(first, succeeded=True), outcome(second, succeeded=False)])

    stats = await a.outbox_stats(later(30))
    again = await b.outbox_stats(later(30))  # the other process reads the same

    expected = {
        "pending": 2,
        "in_flight": 0,
        "held": 2,  # the failure counted against the second subscription
        "parked": 0,
        "delivered": 1,
        "failed": 1,
        "canceled": 0,
    }
    assert stats.deliveries_by_status == again.deliveries_by_status == expected
    assert 29 < stats.oldest_due_age_s < 60
    assert stats.subscriptions_by_state == {"active": 1, "failing": 1, "disabled": 0}


async def test_a_metrics_scrape_runs_no_write_on_a_read_only_connection(
    postgres_server: PostgresServer,
) -> None:
    writer = await open_postgres_store(postgres_server)
    # asyncpg passes unknown URL parameters to the server as settings: every transaction of this
    # store's connections is read-only, so a write in the scrape is refused. (The schema goes in
    # the URL too: the schema option would create it, a write.)
    separator = "&" if "?" in postgres_server.dsn else "?"
    settings = f"search_path={postgres_server.schema}&default_transaction_read_only=on"
    scraper = PostgresStore(f"{postgres_server.dsn}{separator}{settings}")
    try:
        await subscribe(writer)
        for _ in range(3):
            await writer.publish(make_event())
        await scraper.open()

        stats = await scraper.outbox_stats(utcnow())
    finally:
        await scraper.close()
        await writer.close()

    assert stats.deliveries_by_status["pending"] == 3
    assert stats.subscriptions_by_state == {"active": 1, "failing": 0, "disabled": 0}


# -- NOTIFY: one per transaction that made work due ------------------------------------------------


class WorkNotifications:
    """A plain asyncpg connection LISTENing on the work channel, counting one schema's notifications.

    ``count`` first sends a marker of its own: notifications arrive in commit order, so once the
    marker is back every notification committed before it is counted. The marker's scope is no
    schema's, so it wakes no store."""

    def __init__(self, server: PostgresServer) -> None:
        self._server = server
        self._scope = f"{server.schema}:"
        self._marker = f"{server.schema}.marker:{secrets.token_hex(4)}"
        self._heard: list[str] = []
        self._marked = asyncio.Event()
        self._conn: Any = None

    async def __aenter__(self) -> WorkNotifications:
        self._conn = await asyncpg.connect(self._server.dsn)
        await self._conn.add_listener(WORK_CHANNEL, self._heard_one)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.close()

    def _heard_one(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload == self._marker:
            self._marked.set()
        elif payload.startswith(self._scope):
            self._heard.append(payload)

    async def count(self) -> int:
        """How many notifications for the schema arrived since the last count."""
        self._marked.clear()
        await self._conn.execute("SELECT pg_notify($1, $2)", WORK_CHANNEL, self._marker)
        await asyncio.wait_for(self._marked.wait(), timeout=5)
        heard, self._heard = len(self._heard), []
        return heard


@pytest.fixture
async def alone(postgres_server: PostgresServer) -> AsyncIterator[PostgresStore]:
    """One store, so every notification on the schema is its own."""
    store = await open_postgres_store(postgres_server)
    try:
        yield store
    finally:
        await store.close()


async def test_a_connection_goes_back_to_the_pool_without_a_reset_round_trip(
    postgres_server: PostgresServer, alone: PostgresStore
) -> None:
    """asyncpg's default release sends ``RESET ALL; CLOSE ALL; UNLISTEN *; ...``, one more round trip
    per operation; a pooled connection's last statement shows whether it went."""
    await subscribe(alone)
    await alone.publish(make_event())
    assert len(await claim(alone)) == 1

    rows = await query(
        postgres_server,
        postgres_server.schema,
        "SELECT query FROM pg_stat_activity WHERE application_name = 'webhookd' AND state = 'idle'",
    )

    last_statements = [row[0] for row in rows]
    assert last_statements, "the store's connections, idle between operations"
    assert [q for q in last_statements if "RESET ALL" in q] == []


async def test_claims_and_successes_of_a_healthy_subscription_leave_its_row_untouched(
    postgres_server: PostgresServer, stores: tuple[PostgresStore, PostgresStore]
) -> None:
    """No hot row: workers claiming from and recording successes to one subscription neither write
    nor lock its row (a write would give it a new ``xmin``, a row lock a new ``xmax``)."""
    a, b = stores
    sub = await subscribe(a)
    for _ in range(6):
        await a.publish(make_event())
    sql = "SELECT xmin::text, xmax::text FROM subscriptions WHERE id = $1"
    before = await query(postgres_server, postgres_server.schema, sql, sub.id)

    jobs = await claim(a, limit=3) + await claim(b, limit=3)
    await asyncio.gather(
        a.record_attempts([outcome(job, succeeded=True) for job in jobs[:3]]),
        b.record_attempts([outcome(job, succeeded=True) for job in jobs[3:]]),
    )

    assert len(jobs) == 6
    assert [tuple(row) for row in await query(postgres_server, postgres_server.schema, sql, sub.id)] == [
        tuple(row) for row in before
    ]


async def test_a_publish_fanning_out_to_several_subscriptions_notifies_once(
    postgres_server: PostgresServer, alone: PostgresStore
) -> None:
    for name in ("a", "b", "c"):
        await subscribe(alone, url=f"https://hooks.example.com/{name}")
    async with WorkNotifications(postgres_server) as notifications:
        event = dataclasses.replace(
            make_event(idempotency_key="once"), callback_url="https://hooks.example.com/callback"
        )
        published = await alone.publish(event)
        assert published.deliveries == 4
        assert await notifications.count() == 1

        again = await alone.publish(dataclasses.replace(event, id="evt_other"))  # same key: nothing new
        assert again.deliveries == 0
        assert await notifications.count() == 0


async def test_a_callback_publishing_to_several_subscriptions_notifies_once(
    postgres_server: PostgresServer, alone: PostgresStore
) -> None:
    for name in ("a", "b", "c"):
        await subscribe(alone, url=f"https://hooks.example.com/{name}")
    decide, _ = counting(emit=True)
    async with WorkNotifications(postgres_server) as notifications:
        recorded = await alone.record_callback(receipt("k1"), decide)
        assert recorded.published is not None and recorded.published.deliveries == 3
        assert await notifications.count() == 1

        await alone.record_callback(receipt("k1"), decide)  # a duplicate makes nothing due
        assert await notifications.count() == 0


async def test_recording_several_retries_notifies_once(
    postgres_server: PostgresServer, alone: PostgresStore
) -> None:
    for name in ("a", "b", "c"):
        await subscribe(alone, url=f"https://hooks.example.com/{name}")
    await alone.publish(make_event())
    jobs = await claim(alone)
    async with WorkNotifications(postgres_server) as notifications:
        await alone.record_attempts([outcome(job, succeeded=False, next_attempt_at=utcnow()) for job in jobs])
        assert await notifications.count() == 1


async def test_a_successful_probe_releasing_held_deliveries_notifies_once(
    postgres_server: PostgresServer, alone: PostgresStore
) -> None:
    await subscribe(alone)
    for _ in range(3):
        await alone.publish(make_event())
    (first,) = await claim(alone, limit=1)
    await alone.record_attempts([failure(first)])
    (probe,) = await claim(alone, later(11))
    woken: list[None] = []
    alone.add_work_listener(lambda: woken.append(None))
    async with WorkNotifications(postgres_server) as notifications:
        # Only a success, no retry: yet the two held deliveries are due again.
        await alone.record_attempts([outcome(probe, succeeded=True)])
        assert await notifications.count() == 1
    assert woken == [None]
    assert len(await claim(alone, later(11))) == 2


# -- group commit ------------------------------------------------------------------------------


async def _transactions_that_stored(server: PostgresServer, event_ids: list[str]) -> int:
    """How many transactions stored these events: each row's ``xmin`` is the id of the one that
    inserted it (the database's own record, untouched by other sessions on the server). A write
    inside a savepoint has its subtransaction's id, so this counts savepoints too: at most that
    many commits."""
    rows = await query(
        server, server.schema, "SELECT count(DISTINCT xmin::text) FROM events WHERE id = ANY($1)", event_ids
    )
    count: int = rows[0][0]
    return count


async def test_concurrent_publishes_share_transactions_and_each_is_stored_when_answered(
    postgres_server: PostgresServer, alone: PostgresStore
) -> None:
    await subscribe(alone)
    looker = await asyncpg.create_pool(
        postgres_server.dsn, min_size=1, max_size=4, server_settings={"search_path": postgres_server.schema}
    )

    async def publish_and_look(event: NewEvent) -> bool:
        published = await alone.publish(event)
        assert published.created and published.deliveries == 1
        found: bool = await looker.fetchval("SELECT exists (SELECT FROM events WHERE id = $1)", event.id)
        return found

    events = [make_event(idempotency_key=f"k{n}" if n % 2 else None) for n in range(200)]
    try:
        found = await asyncio.gather(*(publish_and_look(event) for event in events))
    finally:
        await looker.close()

    assert all(found)
    assert await _transactions_that_stored(postgres_server, [event.id for event in events]) <= 20
    assert len(await claim(alone, limit=500)) == 200


async def test_a_repeated_key_in_a_batch_gets_the_stored_event_and_its_fresh_batch_mate_is_stored(
    alone: PostgresStore,
) -> None:
    await subscribe(alone)
    first = await alone.publish(make_event(idempotency_key="same"))
    fresh = make_event(idempotency_key="new")

    again, stored, twice = await asyncio.gather(
        alone.publish(make_event(idempotency_key="same")),
        alone.publish(fresh),
        alone.publish(make_event(idempotency_key="new")),  # the key of a batch-mate
    )

    assert (again.created, again.event.id, again.deliveries) == (False, first.event.id, 0)
    assert (stored.created, stored.event.id, stored.deliveries) == (True, fresh.id, 1)
    assert (twice.created, twice.event.id, twice.deliveries) == (False, fresh.id, 0)
    assert {job.event_id for job in await claim(alone)} == {first.event.id, fresh.id}


async def test_a_write_that_fails_in_a_batch_fails_alone(alone: PostgresStore) -> None:
    await subscribe(alone)
    taken = make_event()
    await alone.publish(taken)
    fresh = [make_event() for _ in range(3)]

    answers = await asyncio.gather(
        alone.publish(fresh[0]),
        alone.publish(dataclasses.replace(make_event(), id=taken.id)),  # the primary key is taken
        *(alone.publish(event) for event in fresh[1:]),
        return_exceptions=True,
    )

    assert isinstance(answers[1], asyncpg.UniqueViolationError)
    assert [answer.created for answer in answers if isinstance(answer, PublishResult)] == [True] * 3
    assert {job.event_id for job in await claim(alone)} == {taken.id, *(event.id for event in fresh)}


async def test_a_batch_whose_connection_dies_fails_every_caller_and_stores_nothing(
    postgres_server: PostgresServer, alone: PostgresStore
) -> None:
    await subscribe(alone)
    blocker = await asyncpg.connect(
        postgres_server.dsn, server_settings={"search_path": postgres_server.schema}
    )
    try:
        # The batch's events go in, then its fan-out waits for this lock: half of it is written
        # when its connection is terminated.
        await blocker.execute("BEGIN; LOCK TABLE deliveries IN EXCLUSIVE MODE")
        events = [make_event() for _ in range(10)]
        publishing = asyncio.gather(*(alone.publish(event) for event in events), return_exceptions=True)
        writer_pid = await _wait_for_a_backend_blocked_by(blocker)
        await blocker.execute("SELECT pg_terminate_backend($1)", writer_pid)
        answers = await asyncio.wait_for(publishing, timeout=10)
        await blocker.execute("ROLLBACK")
    finally:
        await blocker.close()

    assert all(isinstance(answer, StorageUnavailable) for answer in answers), answers
    assert await _transactions_that_stored(postgres_server, [event.id for event in events]) == 0
    assert (await alone.publish(make_event())).deliveries == 1
    assert len(await claim(alone)) == 1


async def _wait_for_a_backend_blocked_by(blocker: asyncpg.Connection) -> int:
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        pid: int | None = await blocker.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
        )
        if pid is not None:
            return pid
        await asyncio.sleep(0.01)
    raise AssertionError("no backend waited for the lock")


async def test_two_stores_publishing_the_same_keys_in_opposite_orders_store_each_once_without_deadlock(
    stores: tuple[PostgresStore, PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = stores
    await subscribe(a)
    keys = [f"k{n:03}" for n in range(100)]

    results = await asyncio.gather(
        *(a.publish(make_event(idempotency_key=key)) for key in keys),
        *(b.publish(make_event(idempotency_key=key)) for key in reversed(keys)),
    )

    assert sum(result.created for result in results) == 100
    assert len(await claim(a, limit=500)) == 100
    # A deadlock would be retried and end the same: the batches must not have met one.
    assert not [record for record in caplog.records if getattr(record, "action", None) == "store.retry"]


async def test_publishes_past_the_pending_bound_are_refused_as_overloaded(
    postgres_server: PostgresServer,
) -> None:
    store = PostgresStore(
        postgres_server.dsn, schema=postgres_server.schema, circuit=CIRCUIT, max_pending_writes=5
    )
    await store.open()
    try:
        await postgres_server.reset()
        await subscribe(store)
        answers = await asyncio.gather(
            *(store.publish(make_event()) for _ in range(20)), return_exceptions=True
        )
    finally:
        await store.close()

    refused = [answer for answer in answers if isinstance(answer, Overloaded)]
    stored = [answer for answer in answers if isinstance(answer, PublishResult)]
    assert refused and stored and len(refused) + len(stored) == 20


async def test_a_batch_mixing_plain_targeted_and_callback_publishes_fans_each_out(
    postgres_server: PostgresServer, alone: PostgresStore
) -> None:
    first = await subscribe(alone)
    await subscribe(alone, url="https://hooks.example.com/b")
    with_callback = dataclasses.replace(make_event(), callback_url="https://hooks.example.com/callback")
    targeted = dataclasses.replace(make_event(), type="webhook.test", only_subscription_id=first.id)

    answers = await asyncio.gather(
        alone.publish(make_event()),
        alone.publish(with_callback),
        alone.publish(targeted),
        alone.publish(make_event(idempotency_key="k")),
    )

    assert [answer.deliveries for answer in answers] == [2, 3, 1, 2]
    assert len(await claim(alone)) == 8
    # One savepoint stored them all: the combined publish did not fail over to one by one.
    assert await _transactions_that_stored(postgres_server, [answer.event.id for answer in answers]) == 1
