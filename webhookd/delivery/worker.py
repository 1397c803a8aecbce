"""The delivery loop: claim due deliveries in batches, send them concurrently, record the outcome."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar
from urllib.parse import urlsplit

from webhookd.crypto import (
    SecretBox,
    callback_secret_context,
    open_headers,
    subscription_secret_context,
)
from webhookd.delivery.sender import Sender
from webhookd.delivery.signing import SigningKey, signing_key, webhook_headers
from webhookd.exceptions import DeliveryError, StorageUnavailable
from webhookd.metrics import Metrics, status_class
from webhookd.models import AttemptResult, DeliveryJob, Disabled, SubscriptionKind, new_id, utcnow
from webhookd.retry import RETRY_AFTER_STATUSES, RetryPolicy, parse_retry_after
from webhookd.store.base import Outbox
from webhookd.store.scheduling import HEARTBEAT_S, PACE_LATE_S, ClaimRequest, ended_key
from webhookd.tracing import NO_TRACING, TRACEPARENT, AttributeValue, Span, Tracing

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

CLAIM_BATCH = 100
CLAIM_AHEAD = 2
"""Claimed-but-not-started jobs kept ready, as a multiple of the concurrency. A claim lasts while its
worker lives (see ``webhookd.store.scheduling``), so a ready job may wait any time for a slot."""
KEY_CACHE_SIZE = 10_000
CRASH_TEXT_CHARS = 500
"""How much of an unexpected exception's text an attempt keeps as its error."""


class Worker:
    """Delivers until stopped. Holds no transaction while a request is on the wire."""

    def __init__(
        self,
        store: Outbox,
        sender: Sender,
        box: SecretBox,
        retry: RetryPolicy,
        *,
        concurrency: int,
        per_subscription: int,
        poll_interval_s: float,
        shutdown_grace_s: float,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._store, self._sender, self._box, self._retry = store, sender, box, retry
        self._tracing = tracing
        self._concurrency = concurrency
        self._per_subscription = per_subscription
        self.worker_id = new_id("wkr")
        self._poll_interval_s = poll_interval_s
        self._shutdown_grace_s = shutdown_grace_s
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: dict[asyncio.Task[None], DeliveryJob] = {}
        self._ready: collections.deque[DeliveryJob] = collections.deque()
        self._sending: collections.Counter[str] = collections.Counter()
        """Attempts running here, by subscription: never more than ``per_subscription`` at once."""
        self._over_cap: dict[str, collections.deque[DeliveryJob]] = {}
        """Jobs claimed ahead for a subscription sending at its cap here, in claim order."""
        self._failing: set[str] = set()
        """Subscriptions whose last attempt here failed: on hold until a claim hands out their work."""
        self._unsent: list[DeliveryJob] = []
        self._pacing: dict[str, tuple[asyncio.TimerHandle, DeliveryJob]] = {}
        """Paced jobs waiting for their slot."""
        self._late: list[DeliveryJob] = []
        """Paced jobs that missed their slot: given back unspent before the next claim, for a new one."""
        self._keys: dict[bytes, SigningKey] = {}
        self._custom: dict[bytes, dict[str, str]] = {}
        self._results: list[AttemptResult] = []
        self._recording: list[AttemptResult] = []
        """The batch being recorded: ended attempts the store may not have committed yet."""
        self._results_ready = asyncio.Event()
        self._closing = False

    def stop(self) -> None:
        """Stop claiming. ``run`` returns once in-flight attempts finish or the grace period ends."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        self._store.add_work_listener(self._wake.set)
        await self._store.register_worker(self.worker_id, self._clock())
        flusher = asyncio.create_task(self._flush_results(), name="webhookd-record-attempts")
        heartbeat = asyncio.create_task(self._heartbeat_forever(), name="webhookd-worker-heartbeat")
        logger.info(
            "delivery worker %s started (concurrency %d, %d per subscription)",
            self.worker_id,
            self._concurrency,
            self._per_subscription,
            extra={"action": "worker.start"},
        )
        try:
            while not self._stopping:
                try:
                    await self._claim_and_wait()
                except StorageUnavailable:
                    # The store logs the outage; a line (and traceback) per poll would bury it.
                    await asyncio.sleep(self._poll_interval_s)
                except Exception:
                    # A locked or briefly unavailable database must not end delivery for good.
                    logger.exception(
                        "claiming deliveries failed; retrying", extra={"action": "worker.claim_error"}
                    )
                    await asyncio.sleep(self._poll_interval_s)
        finally:
            await self._drain()
            # Never cancel the flusher: a record cut short would have its deliveries sent again.
            # Wait for it, then record the rest once; what still fails goes back when we retire.
            self._closing = True
            self._results_ready.set()
            await flusher
            await self._record_logged(self._take_results())
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self._retire()
            logger.info("delivery worker stopped", extra={"action": "worker.stop"})

    async def _heartbeat_forever(self) -> None:
        """Say this worker lives; silent for ``WORKER_DEAD_AFTER_S``, its claims are taken back."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._store.worker_heartbeat(self.worker_id, self._clock())
            except StorageUnavailable:
                pass  # the store logs the outage; the next beat tries again
            except Exception:
                logger.exception("heartbeat failed", extra={"action": "worker.heartbeat_error"})

    async def _retire(self) -> None:
        """Forget this worker (anything it still held is then anyone's to take back)."""
        try:
            await self._store.retire_worker(self.worker_id)
        except Exception:
            logger.warning("could not retire worker %s", self.worker_id, extra={"action": "worker.stop"})

    async def _claim_and_wait(self) -> None:
        """Keep up to twice the concurrency claimed ahead, so a send never waits for a claim's
        commit; then sleep until new work, a free slot or the poll interval."""
        self._wake.clear()
        self._start_ready()
        if self._late:
            late, self._late = self._late, []
            await self._release_logged([(job.delivery_id, job.attempt_no) for job in late])
        held = len(self._ready) + len(self._inflight) + sum(map(len, self._over_cap.values()))
        wanted = min(CLAIM_AHEAD * self._concurrency - held, CLAIM_BATCH)
        jobs: list[DeliveryJob] = []
        if wanted > 0:
            ended = tuple(ended_key(r.delivery_id, r.attempt_no) for r in (*self._recording, *self._results))
            request = ClaimRequest(self.worker_id, wanted, self._per_subscription, self._clock(), ended)
            jobs = await self._store.claim_deliveries(request)
            self._failing.difference_update(job.subscription_id for job in jobs)
            self._ready.extend(jobs)
            self._start_ready()
        if wanted <= 0 or len(jobs) < wanted:
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            except TimeoutError:
                pass

    def _start_ready(self) -> None:
        while self._ready and len(self._inflight) < self._concurrency and not self._stopping:
            job = self._ready.popleft()
            if job.subscription_id in self._failing:
                self._unsent.append(job)  # given back once the failure's record committed the hold
                continue
            if self._sending[job.subscription_id] >= self._per_subscription:
                self._over_cap.setdefault(job.subscription_id, collections.deque()).append(job)
                continue
            if job.not_before is not None and not self._in_slot(job, job.not_before):
                continue
            task = asyncio.create_task(self._attempt(job), name=f"deliver-{job.delivery_id}")
            self._inflight[task] = job
            self._sending[job.subscription_id] += 1
            task.add_done_callback(self._finished)

    def _in_slot(self, job: DeliveryJob, slot: datetime) -> bool:
        """Whether a paced job may go now. Before its slot it waits for it; more than
        ``PACE_LATE_S`` after (every worker slot was busy, or the loop was), sending it could put one
        attempt too many into a second, so it goes back for a later slot."""
        late_s = (self._clock() - slot).total_seconds()
        if late_s < 0:
            self._wait_for_slot(job, slot)
        elif late_s > PACE_LATE_S:
            self._late.append(job)
            self._wake.set()
        return 0 <= late_s <= PACE_LATE_S

    def _wait_for_slot(self, job: DeliveryJob, slot: datetime) -> None:
        """A paced subscription's job waits for its slot outside the worker's slots, then goes first."""
        wait_s = (slot - self._clock()).total_seconds()
        self._pacing[job.delivery_id] = (
            asyncio.get_running_loop().call_later(wait_s, self._slot_reached, job),
            job,
        )

    def _slot_reached(self, job: DeliveryJob) -> None:
        self._pacing.pop(job.delivery_id, None)
        self._ready.appendleft(job)
        self._start_ready()

    def _finished(self, task: asyncio.Task[None]) -> None:
        job = self._inflight.pop(task)
        self._sending[job.subscription_id] -= 1
        waiting = self._over_cap.get(job.subscription_id)
        if waiting:  # its room here goes to the next job claimed for it, in claim order
            self._ready.appendleft(waiting.popleft())
            if not waiting:
                del self._over_cap[job.subscription_id]
        self._start_ready()  # the freed slot goes to a claimed job at once, not at the next loop
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "delivery task crashed",
                exc_info=task.exception(),
                extra={"action": "worker.task_error"},
            )

    async def _attempt(self, job: DeliveryJob) -> None:
        # Results are recorded in batches. If the process dies before a batch commits, its claims
        # are taken back and the delivery is sent again: at-least-once, never lost.
        started, began = self._clock(), time.perf_counter()
        try:
            result = await self.deliver(job)
        except Exception as exc:
            result = self._crashed(job, exc, started, time.perf_counter() - began)
        # A failure puts the subscription on hold: its jobs claimed and not started yet must not go
        # into an endpoint now known to fail. A later claim of its deliveries says it is open again.
        if result.succeeded:
            self._failing.discard(job.subscription_id)
        else:
            self._failing.add(job.subscription_id)
            self._unsent.extend(self._over_cap.pop(job.subscription_id, ()))
        # Append only after the await: the flusher swaps ``self._results`` meanwhile.
        self._results.append(result)
        self._results_ready.set()

    def _crashed(
        self, job: DeliveryJob, exc: Exception, started: datetime, duration_s: float
    ) -> AttemptResult:
        """An attempt that raised (a secret that does not decrypt, a bug) fails like any other and
        follows the retry schedule: left claimed, it would stay claimed for as long as this worker lives."""
        logger.error(
            "attempt %d of %s crashed",
            job.attempt_no,
            job.delivery_id,
            exc_info=exc,
            extra={"action": "worker.attempt_error", "delivery_id": job.delivery_id},
        )
        outcome = AttemptResult(
            delivery_id=job.delivery_id,
            attempt_no=job.attempt_no,
            started_at=started,
            duration_s=duration_s,
            status_code=None,
            error=f"internal error: {type(exc).__name__}: {exc}"[:CRASH_TEXT_CHARS],
            response_excerpt=b"",
            succeeded=False,
            next_attempt_at=None,
            subscription_id=job.subscription_id,
        )
        self._observe(job, outcome)
        return self._failed(job, outcome, None)

    async def _flush_results(self) -> None:
        """Record results as they come until shutdown, which waits for a record in progress."""
        while True:
            await self._results_ready.wait()
            if self._closing:
                return
            self._results_ready.clear()
            if not await self._record_logged(self._take_results()):
                await asyncio.sleep(self._poll_interval_s)  # the store is out: try again shortly
                self._results_ready.set()

    async def _record_logged(self, batch: list[AttemptResult]) -> bool:
        """Record, or log why not; False if the batch waits for another try. A claim lasts while
        this worker lives, so results that could not be recorded must not just be dropped: with the
        store out they wait; after any other failure their claims go back, to be sent again."""
        self._recording = batch
        try:
            await self._record(batch)
        except StorageUnavailable as exc:
            logger.warning(
                "recording %d attempts failed; trying again: %s",
                len(batch),
                exc,
                extra={"action": "worker.record_error"},
            )
            self._results[:0] = batch
            return False
        except Exception:
            logger.exception(
                "recording attempts failed; their deliveries will be sent again",
                extra={"action": "worker.record_error"},
            )
            await self._release_logged([(r.delivery_id, r.attempt_no) for r in batch])
        finally:
            self._recording = []
        return True

    async def _release_logged(self, claims: list[tuple[str, int]]) -> None:
        try:
            await self._store.release_deliveries(claims)
        except Exception:
            logger.exception(
                "releasing %d claims failed; they go back when this worker stops",
                len(claims),
                extra={"action": "worker.release"},
            )

    def _take_results(self) -> list[AttemptResult]:
        batch, self._results = self._results, []
        return batch

    async def _record(self, batch: list[AttemptResult]) -> None:
        if not batch:
            return
        for disabled in await self._store.record_attempts(batch):
            self._disabled(disabled)
        if self._unsent:
            unsent, self._unsent = self._unsent, []
            await self._release_logged([(job.delivery_id, job.attempt_no) for job in unsent])

    def _disabled(self, disabled: Disabled) -> None:
        """Count and log a disable, with the reason of the outcome that made it (the store says
        which: a batch can hold several failures for one subscription)."""
        reason = disabled.reason.value
        self._metrics.auto_disables.labels(reason).inc()
        logger.warning(
            "subscription %s of customer %s disabled: %s",
            disabled.subscription_id,
            disabled.customer_id,
            reason,
            extra={
                "action": "subscription.disabled",
                "customer_id": disabled.customer_id,
                "subscription_id": disabled.subscription_id,
                "reason": reason,
            },
        )

    async def deliver(self, job: DeliveryJob) -> AttemptResult:
        """Sign and POST one delivery, and classify what came back."""
        started = self._clock()
        signed = webhook_headers(self._keys_for(job), job.event_id, int(time.time()), job.payload)
        headers = {**self._custom_headers(job), **signed}  # the signature's headers always win
        # The attempt continues the publisher's trace, stored with the event; an event stored
        # without one (published with tracing off) starts a trace of its own.
        parent = {TRACEPARENT: job.traceparent} if job.traceparent else {}
        with self._tracing.span(
            "webhookd.deliver", _span_attributes(job), kind="client", parent=parent
        ) as span:
            traceparent = span.traceparent
            if traceparent is not None:
                headers[TRACEPARENT] = traceparent  # the receiver's own tracing joins up
            began = time.perf_counter()
            status, error, excerpt, retry_after = await self._send(job, headers, span)
        outcome = AttemptResult(
            delivery_id=job.delivery_id,
            attempt_no=job.attempt_no,
            started_at=started,
            duration_s=time.perf_counter() - began,
            status_code=status,
            error=error,
            response_excerpt=excerpt,
            succeeded=status is not None and 200 <= status < 300,
            next_attempt_at=None,
            subscription_id=job.subscription_id,
        )
        self._observe(job, outcome)
        return outcome if outcome.succeeded else self._failed(job, outcome, retry_after)

    async def _send(
        self, job: DeliveryJob, headers: dict[str, str], span: Span
    ) -> tuple[int | None, str | None, bytes, str | None]:
        """``(status, error, excerpt, Retry-After)`` of one POST, noted on the attempt's span."""
        try:
            response = await self._sender.send(job.url, job.payload, headers)
        except DeliveryError as exc:
            span.fail(type(exc).__name__)
            return None, f"{type(exc).__name__}: {exc}", b"", None
        span.set("http.response.status_code", response.status)
        if not 200 <= response.status < 300:
            span.fail(str(response.status))
        return response.status, None, response.excerpt, response.retry_after

    def _observe(self, job: DeliveryJob, outcome: AttemptResult) -> None:
        m = self._metrics
        label = "success" if outcome.succeeded else "failure" if outcome.status_code else "error"
        m.attempts.labels(label, status_class(outcome.status_code)).inc()
        m.attempt_duration.observe(outcome.duration_s)
        if outcome.succeeded:
            m.end_to_end.observe(max(0.0, (self._clock() - job.event_created_at).total_seconds()))

    def _failed(self, job: DeliveryJob, outcome: AttemptResult, retry_after: str | None) -> AttemptResult:
        """When to try again, and how long the endpoint asked to be left alone: the store decides
        what the failure does to the subscription."""
        now, status = self._clock(), outcome.status_code
        wait_s = parse_retry_after(retry_after, now) if status in RETRY_AFTER_STATUSES else None
        delay_s = self._retry.delay_after(job.attempt_no, wait_s)
        error = outcome.error if status is None else f"HTTP {status}"
        logger.info(
            "attempt %d of %s failed: %s",
            job.attempt_no,
            job.delivery_id,
            error,
            extra={"action": "delivery.attempt_failed", "delivery_id": job.delivery_id},
        )
        return dataclasses.replace(
            outcome,
            error=error,
            next_attempt_at=None if delay_s is None else now + timedelta(seconds=delay_s),
            retry_after_s=wait_s,
        )

    def _custom_headers(self, job: DeliveryJob) -> dict[str, str]:
        """The subscription's own headers, decrypted once per ciphertext like the keys."""
        if job.headers is None:
            return {}
        found = self._custom.get(job.headers)
        if found is None:
            found = open_headers(self._box, job.subscription_id, job.headers)
            _remember(self._custom, job.headers, found)
        return found

    def _keys_for(self, job: DeliveryJob) -> list[SigningKey]:
        """The signing keys: the current secret, and during a rotation's grace period the old one."""
        if job.kind is SubscriptionKind.CALLBACK:
            context = callback_secret_context(job.customer_id)
        else:
            context = subscription_secret_context(job.subscription_id)
        blobs = [job.secret] if job.previous_secret is None else [job.secret, job.previous_secret]
        return [self._key(blob, context) for blob in blobs]

    def _key(self, blob: bytes, context: str) -> SigningKey:
        key = self._keys.get(blob)
        if key is None:
            key = signing_key(self._box.decrypt(blob, context).decode())
            _remember(self._keys, blob, key)
        return key

    async def _drain(self) -> None:
        """Let in-flight attempts finish within the grace period, then release the rest, and
        the jobs claimed ahead that never started."""
        for handle, _ in self._pacing.values():
            handle.cancel()
        unstarted = [*self._ready, *self._unsent, *self._late, *(job for _, job in self._pacing.values())]
        unstarted += [job for waiting in self._over_cap.values() for job in waiting]
        self._over_cap.clear()
        self._ready.clear()
        self._unsent, self._late = [], []
        self._pacing.clear()
        unfinished: list[DeliveryJob] = []
        if self._inflight:
            _, running = await asyncio.wait(list(self._inflight), timeout=self._shutdown_grace_s)
            unfinished = [self._inflight[task] for task in running]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        await self._store.release_deliveries(
            [(job.delivery_id, job.attempt_no) for job in unstarted + unfinished]
        )
        if unfinished:
            logger.warning(
                "released %d unfinished deliveries at shutdown",
                len(unfinished),
                extra={"action": "worker.release"},
            )


def _remember(cache: dict[bytes, _T], blob: bytes, value: _T) -> None:
    """Keep what a ciphertext decrypts to, forgetting everything once the cache is full."""
    if len(cache) >= KEY_CACHE_SIZE:
        cache.clear()
    cache[blob] = value


def _span_attributes(job: DeliveryJob) -> dict[str, AttributeValue]:
    """What an attempt's span says about it. The host alone: a URL's path or query may hold a token."""
    return {
        "webhookd.subscription.id": job.subscription_id,
        "webhookd.delivery.id": job.delivery_id,
        "webhookd.delivery.attempt": job.attempt_no,
        "webhookd.event.id": job.event_id,
        "webhookd.event.type": job.event_type,
        "http.request.method": "POST",
        "server.address": urlsplit(job.url).hostname or "",
    }
