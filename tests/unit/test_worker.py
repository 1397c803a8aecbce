"""The delivery worker's failure paths, on a real SqliteStore with a fake sender.

The sender is the worker's injectable I/O edge: ``FakeSender`` answers from a script, and holds
each send until the test opens its gate, so every interleaving here is one the test chose.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from webhookd.crypto import SecretBox, new_webhook_secret, subscription_secret_context
from webhookd.delivery.sender import SendResponse
from webhookd.delivery.worker import Worker
from webhookd.metrics import Metrics
from webhookd.models import (
    AttemptResult,
    DeliveryStatus,
    Disabled,
    DisabledReason,
    NewEvent,
    Subscription,
    new_id,
    utcnow,
)
from webhookd.retry import RetryPolicy
from webhookd.store.base import DeliveryClaim, DeliveryDetail, PageRequest
from webhookd.store.circuit import CircuitPolicy
from webhookd.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

KEY = bytes(range(32))
CUSTOMER = "cus_worker"
URL = "https://hooks.example.com/worker"

Answer = SendResponse | Exception
S = TypeVar("S", bound=SqliteStore)


class FakeSender:
    """Answers each send with the next scripted answer, the last one repeating (an exception is
    raised). With a gate, each send takes its answer, then waits for the gate; ``arrived`` is set
    once ``expected`` sends have arrived."""

    def __init__(self, answers: Sequence[Answer], *, gate: asyncio.Event | None = None, expected: int = 0):
        self._answers = collections.deque(answers)
        self._gate = gate
        self._expected = expected
        self.sends = 0
        self.arrived = asyncio.Event()

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResponse:
        answer = self._answers.popleft() if len(self._answers) > 1 else self._answers[0]
        self.sends += 1
        if self.sends >= self._expected:
            self.arrived.set()
        if self._gate is not None:
            await self._gate.wait()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        pass


class GatedStore(SqliteStore):
    """A real SqliteStore whose records wait for ``gate`` (and say so in ``recording``), and which
    says when the worker's shutdown released its claims (``released``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, circuit=circuit((0.0, 0.0)))
        self.gate, self.recording, self.released = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[Disabled]:
        self.recording.set()
        await self.gate.wait()
        return await super().record_attempts(results)

    async def release_deliveries(self, claims: Sequence[DeliveryClaim]) -> None:
        await super().release_deliveries(claims)
        self.released.set()


@contextlib.asynccontextmanager
async def opened(store: S) -> AsyncIterator[S]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def subscribe(
    store: SqliteStore,
    box: SecretBox,
    *,
    secret: bytes | None = None,
    rate_limit_per_second: int | None = None,
) -> str:
    await store.ensure_customer(CUSTOMER)
    sub_id = new_id("sub")
    sealed = secret or box.encrypt(new_webhook_secret().encode(), subscription_secret_context(sub_id))
    sub = Subscription(
        sub_id,
        CUSTOMER,
        URL,
        ("call.completed",),
        None,
        sealed,
        True,
        utcnow(),
        rate_limit_per_second=rate_limit_per_second,
    )
    await store.create_subscription(sub)
    return sub_id


async def publish(store: SqliteStore, count: int = 1) -> None:
    for n in range(count):
        await store.publish(NewEvent(CUSTOMER, "call.completed", {"call_id": f"c{n}"}))


def circuit(schedule_s: tuple[float, ...], disable_after: int = 100) -> CircuitPolicy:
    """The store's circuit rules on this retry schedule, without jitter."""
    return CircuitPolicy(RetryPolicy(schedule_s, jitter_ratio=0.0), disable_after)


def worker(
    store: SqliteStore,
    sender: FakeSender,
    *,
    schedule_s: tuple[float, ...] = (0.0, 0.0),
    concurrency: int = 4,
    metrics: Metrics | None = None,
    clock: Callable[[], datetime] = utcnow,
    per_subscription: int = 100,
) -> Worker:
    return Worker(
        store,
        sender,
        SecretBox(KEY),
        RetryPolicy(schedule_s, jitter_ratio=0.0),
        concurrency=concurrency,
        per_subscription=per_subscription,
        poll_interval_s=0.05,
        shutdown_grace_s=10.0,
        metrics=metrics,
        clock=clock,
    )


@contextlib.asynccontextmanager
async def running(w: Worker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(w.run())
    try:
        yield task
    finally:
        w.stop()
        await task


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail the test with a timeout otherwise."""

    async def poll() -> None:
        while not await check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout_s)


async def only_delivery(store: SqliteStore, sub_id: str) -> DeliveryDetail:
    page = await store.list_deliveries(CUSTOMER, sub_id, PageRequest(limit=10))
    assert len(page.items) == 1
    detail = await store.get_delivery(CUSTOMER, page.items[0].id)
    assert detail is not None
    return detail


async def test_a_sender_that_raises_fails_the_attempt_and_the_delivery_when_its_schedule_is_spent(
    tmp_path: Path,
) -> None:
    async with opened(SqliteStore(tmp_path / "w.db", circuit=circuit((0.0, 0.0)))) as store:
        sub_id = await subscribe(store, SecretBox(KEY))
        await publish(store)
        sender = FakeSender([RuntimeError("a bug in the sender")])

        async def failed() -> bool:
            return (await only_delivery(store, sub_id)).delivery.status is DeliveryStatus.FAILED

        async with running(worker(store, sender, schedule_s=(0.0, 0.0))):
            await until(failed)

        detail = await only_delivery(store, sub_id)
        assert [(a.attempt_no, a.status_code, a.error) for a in detail.attempts] == [
            (n, None, "internal error: RuntimeError: a bug in the sender") for n in (1, 2)
        ]
        assert sender.sends == 2


async def test_a_secret_that_does_not_decrypt_fails_the_attempt_without_sending(tmp_path: Path) -> None:
    async with opened(SqliteStore(tmp_path / "w.db")) as store:
        sub_id = await subscribe(store, SecretBox(KEY), secret=b"not a sealed secret")
        await publish(store)
        sender = FakeSender([SendResponse(200, b"ok")])

        async def failed() -> bool:
            return (await only_delivery(store, sub_id)).delivery.status is DeliveryStatus.FAILED

        async with running(worker(store, sender, schedule_s=(0.0,))):
            await until(failed)

        (attempt,) = (await only_delivery(store, sub_id)).attempts
        assert attempt.error is not None and attempt.error.startswith("internal error: ")
        assert sender.sends == 0


async def test_shutdown_waits_for_a_record_in_progress(tmp_path: Path) -> None:
    async with opened(GatedStore(tmp_path / "w.db")) as store:
        sub_id = await subscribe(store, SecretBox(KEY))
        await publish(store)
        w = worker(store, FakeSender([SendResponse(200, b"ok")]))
        run = asyncio.create_task(w.run())

        await store.recording.wait()  # the attempt is done and its record has begun
        w.stop()
        await store.released.wait()  # shutdown has drained the in-flight attempts
        store.gate.set()
        await run

        assert (await only_delivery(store, sub_id)).delivery.status is DeliveryStatus.DELIVERED


async def test_the_disable_logged_is_the_one_that_disabled_the_subscription(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One batch: a 500 (counted, not disabling) then a 410 Gone (disabling)."""
    async with opened(SqliteStore(tmp_path / "w.db")) as store:
        sub_id = await subscribe(store, SecretBox(KEY))
        await publish(store, 2)
        gate = asyncio.Event()
        sender = FakeSender([SendResponse(500, b""), SendResponse(410, b"")], gate=gate, expected=2)
        metrics = Metrics()
        w = worker(store, sender, concurrency=2, metrics=metrics)

        async def disabled() -> bool:
            sub = await store.get_subscription(CUSTOMER, sub_id)
            return sub is not None and not sub.is_active

        with caplog.at_level(logging.WARNING, logger="webhookd.delivery.worker"):
            async with running(w):
                await sender.arrived.wait()
                gate.set()  # both answers come back in one loop step: one batch to record
                await until(disabled)

        sub = await store.get_subscription(CUSTOMER, sub_id)
        assert sub is not None and sub.disabled_reason is DisabledReason.ENDPOINT_GONE
        (line,) = [r for r in caplog.records if getattr(r, "action", None) == "subscription.disabled"]
        assert line.getMessage() == f"subscription {sub_id} of customer {CUSTOMER} disabled: endpoint_gone"
        assert (line.__dict__["customer_id"], line.__dict__["reason"]) == (CUSTOMER, "endpoint_gone")
        disables = metrics.registry.get_sample_value(
            "webhookd_subscription_auto_disables_total", {"reason": "endpoint_gone"}
        )
        assert disables == 1


async def test_a_failure_gives_back_what_was_claimed_for_its_subscription_and_not_sent(
    tmp_path: Path,
) -> None:
    """One slot: the first attempt fails while another is claimed and waiting behind it. The failure
    puts the subscription on hold, so that one goes back held with no attempt spent, instead of
    going into an endpoint known to fail."""
    async with opened(SqliteStore(tmp_path / "w.db", circuit=circuit((600.0, 600.0)))) as store:
        sub_id = await subscribe(store, SecretBox(KEY))
        await publish(store, 5)
        gate = asyncio.Event()
        sender = FakeSender([SendResponse(500, b"down")], gate=gate, expected=1)  # probes after 600 s
        w = worker(store, sender, schedule_s=(600.0, 600.0), concurrency=1)

        async def statuses() -> collections.Counter[DeliveryStatus]:
            page = await store.list_deliveries(CUSTOMER, sub_id, PageRequest(limit=10))
            return collections.Counter(d.status for d in page.items)

        async def all_held() -> bool:
            return (await statuses())[DeliveryStatus.HELD] == 5

        async with running(w):
            await sender.arrived.wait()
            gate.set()
            await until(all_held)

        page = await store.list_deliveries(CUSTOMER, sub_id, PageRequest(limit=10))
        assert sorted(d.attempts for d in page.items) == [0, 0, 0, 0, 1]
        assert sender.sends == 1


async def test_a_paced_job_that_missed_its_slot_goes_back_for_a_new_one_unspent(tmp_path: Path) -> None:
    """Rate 5, one worker slot: while the first send holds it, the clock moves a second on, so the
    other two jobs' slots pass. Sent now, they would land in one second with whatever the next claim
    paces; they go back instead (no attempt spent) and are sent in new slots."""
    offset = timedelta()

    def clock() -> datetime:
        return utcnow() + offset

    async with opened(GatedStore(tmp_path / "w.db")) as store:
        store.gate.set()
        sub_id = await subscribe(store, SecretBox(KEY), rate_limit_per_second=5)
        await publish(store, 3)
        gate = asyncio.Event()
        sender = FakeSender([SendResponse(200, b"ok")], gate=gate, expected=1)

        async def all_delivered() -> bool:
            page = await store.list_deliveries(CUSTOMER, sub_id, PageRequest(limit=10))
            return all(d.status is DeliveryStatus.DELIVERED for d in page.items)

        async with running(worker(store, sender, concurrency=1, clock=clock)):
            await sender.arrived.wait()
            offset = timedelta(seconds=1)
            gate.set()
            await asyncio.wait_for(store.released.wait(), 10)  # given back while running
            await until(all_delivered)

        page = await store.list_deliveries(CUSTOMER, sub_id, PageRequest(limit=10))
        assert [d.attempts for d in page.items] == [1, 1, 1]
        assert sender.sends == 3


async def test_a_subscription_at_its_cap_is_claimed_again_before_its_ended_attempts_are_recorded(
    tmp_path: Path,
) -> None:
    """Cap 2 and records held back: once the first two attempts end, the next two go out without
    waiting for those records to commit, since they no longer hold room under the cap."""
    async with opened(GatedStore(tmp_path / "w.db")) as store:
        sub_id = await subscribe(store, SecretBox(KEY))
        await publish(store, 4)
        sender = FakeSender([SendResponse(200, b"ok")], expected=4)

        async def all_delivered() -> bool:
            page = await store.list_deliveries(CUSTOMER, sub_id, PageRequest(limit=10))
            return [d.status for d in page.items] == [DeliveryStatus.DELIVERED] * 4

        async with running(worker(store, sender, per_subscription=2)):
            await store.recording.wait()
            await asyncio.wait_for(sender.arrived.wait(), 10)  # all four sent, nothing recorded yet
            store.gate.set()
            await until(all_delivered)


async def test_claimed_ahead_jobs_wait_so_no_more_than_the_cap_are_sent_at_once(tmp_path: Path) -> None:
    """Cap 2: the worker, alone on the subscription, claims twice that, but sends two at a time."""
    async with opened(SqliteStore(tmp_path / "w.db")) as store:
        sub_id = await subscribe(store, SecretBox(KEY))
        await publish(store, 6)
        gate = asyncio.Event()
        sender = FakeSender([SendResponse(200, b"ok")], gate=gate, expected=2)

        async def statuses() -> collections.Counter[DeliveryStatus]:
            page = await store.list_deliveries(CUSTOMER, sub_id, PageRequest(limit=10))
            return collections.Counter(d.status for d in page.items)

        async def four_claimed() -> bool:
            return (await statuses())[DeliveryStatus.IN_FLIGHT] == 4

        async def all_delivered() -> bool:
            return (await statuses())[DeliveryStatus.DELIVERED] == 6

        async with running(worker(store, sender, per_subscription=2, concurrency=10)):
            await sender.arrived.wait()
            await until(four_claimed)
            assert sender.sends == 2  # the other two wait for room, claimed
            gate.set()
            await until(all_delivered)
        assert sender.sends == 6
