"""The delivery loop: claim due deliveries in batches, send them concurrently, record the outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from webhookd.crypto import SecretBox, subscription_secret_context, webhook_secret_key
from webhookd.delivery.retry import RetryPolicy
from webhookd.delivery.sender import Sender
from webhookd.delivery.signing import webhook_headers
from webhookd.exceptions import DeliveryError
from webhookd.models import AttemptResult, DeliveryJob, utcnow
from webhookd.store.base import Store

logger = logging.getLogger(__name__)

CLAIM_BATCH = 100
KEY_CACHE_SIZE = 10_000


class Worker:
    """Delivers until stopped. Holds no transaction while a request is on the wire."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        box: SecretBox,
        policy: RetryPolicy,
        *,
        concurrency: int,
        lease_s: float,
        poll_interval_s: float,
        shutdown_grace_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store, self._sender, self._box, self._policy = store, sender, box, policy
        self._concurrency = concurrency
        self._lease_s = lease_s
        self._poll_interval_s = poll_interval_s
        self._shutdown_grace_s = shutdown_grace_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: dict[asyncio.Task[None], DeliveryJob] = {}
        self._keys: dict[bytes, bytes] = {}

    def stop(self) -> None:
        """Stop claiming. ``run`` returns once in-flight attempts finish or the grace period ends."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        self._store.add_work_listener(self._wake.set)
        logger.info(
            "delivery worker started (concurrency %d)",
            self._concurrency,
            extra={"action": "worker.start"},
        )
        try:
            while not self._stopping:
                try:
                    await self._claim_and_wait()
                except Exception:
                    # A locked or briefly unavailable database must not end delivery for good.
                    logger.exception(
                        "claiming deliveries failed; retrying", extra={"action": "worker.claim_error"}
                    )
                    await asyncio.sleep(self._poll_interval_s)
        finally:
            await self._drain()
            logger.info("delivery worker stopped", extra={"action": "worker.stop"})

    async def _claim_and_wait(self) -> None:
        self._wake.clear()
        free = self._concurrency - len(self._inflight)
        wanted = min(free, CLAIM_BATCH)
        jobs: list[DeliveryJob] = []
        if wanted > 0:
            jobs = await self._store.claim_deliveries(limit=wanted, lease_s=self._lease_s, now=self._clock())
            for job in jobs:
                self._start(job)
        if wanted == 0 or len(jobs) < wanted:
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            except TimeoutError:
                pass

    def _start(self, job: DeliveryJob) -> None:
        task = asyncio.create_task(self._attempt(job), name=f"deliver-{job.delivery_id}")
        self._inflight[task] = job
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "delivery task crashed",
                exc_info=task.exception(),
                extra={"action": "worker.task_error"},
            )

    async def _attempt(self, job: DeliveryJob) -> None:
        result = await self.deliver(job)
        # If recording fails, the lease expires and the delivery is sent again: at-least-once.
        await self._store.record_attempts([result])

    async def deliver(self, job: DeliveryJob) -> AttemptResult:
        """Sign and POST one delivery, and classify what came back."""
        started = self._clock()
        timestamp = int(time.time())
        headers = webhook_headers([self._key_for(job)], job.event_id, timestamp, job.payload)
        began = time.perf_counter()
        status: int | None = None
        error: str | None = None
        excerpt = b""
        try:
            response = await self._sender.send(job.url, job.payload, headers)
            status, excerpt = response.status, response.excerpt
        except DeliveryError as exc:
            error = str(exc)
        duration_s = time.perf_counter() - began
        succeeded = status is not None and 200 <= status < 300
        next_at = None if succeeded else self._next_attempt_at(job.attempt_no)
        if status is not None and not succeeded:
            error = f"HTTP {status}"
        logger.debug(
            "attempt %d of %s: %s",
            job.attempt_no,
            job.delivery_id,
            error or status,
            extra={"action": "delivery.attempt"},
        )
        return AttemptResult(
            job.delivery_id,
            job.attempt_no,
            started,
            duration_s,
            status,
            error,
            excerpt,
            succeeded,
            next_at,
        )

    def _next_attempt_at(self, attempt_no: int) -> datetime | None:
        delay_s = self._policy.delay_after(attempt_no)
        return None if delay_s is None else self._clock() + timedelta(seconds=delay_s)

    def _key_for(self, job: DeliveryJob) -> bytes:
        key = self._keys.get(job.secret)
        if key is None:
            secret = self._box.decrypt(job.secret, subscription_secret_context(job.subscription_id))
            key = webhook_secret_key(secret.decode())
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[job.secret] = key
        return key

    async def _drain(self) -> None:
        """Let in-flight attempts finish within the grace period, then release the rest."""
        if not self._inflight:
            return
        _, still_running = await asyncio.wait(list(self._inflight), timeout=self._shutdown_grace_s)
        unfinished = [self._inflight[task] for task in still_running]
        for task in still_running:
            task.cancel()
        await asyncio.gather(*still_running, return_exceptions=True)
        await self._store.release_deliveries([job.delivery_id for job in unfinished])
        if unfinished:
            logger.warning(
                "released %d unfinished deliveries at shutdown",
                len(unfinished),
                extra={"action": "worker.release"},
            )
