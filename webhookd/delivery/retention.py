"""Retention: prune finished deliveries, their attempts and old events, a small batch at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from webhookd.exceptions import StorageUnavailable
from webhookd.models import utcnow
from webhookd.store.base import Store

logger = logging.getLogger(__name__)

PRUNE_BATCH = 500
PRUNE_INTERVAL_S = 300.0
DEDUPE_WINDOW = timedelta(days=7)
"""Events (and so their idempotency keys) are kept at least this long, whatever the retention."""


async def prune_once(store: Store, retention: timedelta, clock: Callable[[], datetime] = utcnow) -> int:
    """Prune everything past retention, in batches that each commit on their own, so writers
    queued behind one batch (ingest) go before the next. Returns the rows deleted."""
    total = 0
    while True:
        now = clock()
        gone = await store.prune(
            deliveries_before=now - retention,
            events_before=now - max(retention, DEDUPE_WINDOW),
            limit=PRUNE_BATCH,
        )
        total += gone
        if gone == 0:
            return total
        await asyncio.sleep(0)


async def prune_forever(store: Store, retention: timedelta, interval_s: float = PRUNE_INTERVAL_S) -> None:
    """Prune now and then every ``interval_s`` until cancelled. Errors are logged, never fatal."""
    while True:
        try:
            gone = await prune_once(store, retention)
        except StorageUnavailable:
            pass  # the store logs the outage
        except Exception:
            logger.exception("pruning failed; will try again", extra={"action": "retention.error"})
        else:
            if gone:
                logger.info("pruned %d rows past retention", gone, extra={"action": "retention.pruned"})
        await asyncio.sleep(interval_s)
