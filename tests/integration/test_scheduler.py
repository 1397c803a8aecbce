"""The delivery scheduler over real HTTP: a slow customer does not hold another back, a restarted
server sends its dead predecessor's claims again at once, a paced subscription is never sent more than
its rate in any second, and an ordered subscription gets a call's events in order through a retry."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.harness import (
    Received,
    Receiver,
    auth,
    provision_key,
    running_receiver,
    running_server,
    server_settings,
)
from tests.integration.test_crash import Node
from webhookd.models import Scope

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SCOPES = {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS}
SLOW_BACKLOG = 300
FAST_EVENTS = 20


async def _subscribe(http: aiohttp.ClientSession, base: str, key: str, url: str, **options: Any) -> None:
    body = {"url": url, "events": ["call.completed"], **options}
    async with http.post(f"{base}/api/v1/webhook-subscriptions", headers=auth(key), json=body) as response:
        assert response.status == 201, await response.text()
        created = await response.json()
    assert {name: created[name] for name in options} == options


async def _publish(
    http: aiohttp.ClientSession, base: str, key: str, n: int, **fields: Any
) -> tuple[str, float]:
    body = {"type": "call.completed", "data": {"n": n}, **fields}
    async with http.post(f"{base}/api/v1/events", headers=auth(key), json=body) as response:
        assert response.status == 202
        event_id: str = (await response.json())["id"]
        return event_id, time.monotonic()


async def test_a_slow_customers_backlog_does_not_delay_another_customer(tmp_path: Path) -> None:
    """A's endpoint takes 2 s an answer and A has hundreds pending; B's events still arrive within a
    second of being acknowledged, while A goes on at its cap."""
    db = tmp_path / "w.db"
    key_a = await provision_key(db, "cus_a", SCOPES)
    key_b = await provision_key(db, "cus_b", SCOPES)
    settings = server_settings(db)
    async with (
        running_receiver(Receiver(delay_s=2.0)) as slow,
        running_receiver() as fast,
        running_server(settings) as base,
        aiohttp.ClientSession() as http,
    ):
        await _subscribe(http, base, key_a, slow.url)
        await _subscribe(http, base, key_b, fast.url)
        await asyncio.gather(*(_publish(http, base, key_a, n) for n in range(SLOW_BACKLOG)))
        await slow.wait_for(lambda got: len(got) >= settings.max_in_flight_per_subscription)

        acked = dict([await _publish(http, base, key_b, n) for n in range(FAST_EVENTS)])
        await fast.wait_for(lambda got: len(got) >= FAST_EVENTS, timeout_s=30)
        a_before = len(slow.requests)
        await slow.wait_for(lambda got: len(got) >= a_before + settings.max_in_flight_per_subscription)

    latencies = [r.arrived_at - acked[r.headers["webhook-id"]] for r in fast.requests]
    assert max(latencies) <= 1.0, sorted(latencies)
    assert len(slow.requests) < SLOW_BACKLOG  # A's backlog was still there all along


async def test_a_restarted_server_sends_its_dead_predecessors_claims_at_once(tmp_path: Path) -> None:
    """kill -9 while the claimed deliveries wait on a stalled endpoint; the next server proves the old
    one dead by its lock file and sends them again at once, not after a lease."""
    node = Node.create(tmp_path)
    stalled = Receiver(delay_s=4.0)
    async with running_receiver(stalled) as receiver, aiohttp.ClientSession() as http:
        async with node.process() as process:
            await node.subscribe(http, receiver.url)
            published = await node.publish(http, 40)
            await receiver.wait_for(lambda got: len(got) >= 16)
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait, 10)
        stalled.delay_s = 0.0
        cut_off = len(receiver.requests)
        async with node.process():
            # Within seconds; the old lease would have held them back for a minute.
            await receiver.wait_for(lambda _: published <= _answered(receiver, cut_off), timeout_s=20)


def _answered(receiver: Receiver, after: int) -> set[str]:
    return {r.headers["webhook-id"] for r in receiver.requests[after:]}


RATE = 5
PACED_EVENTS = 20


async def test_a_paced_subscription_gets_no_more_than_its_rate_in_any_second(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    key = await provision_key(db, "cus_p", SCOPES)
    async with (
        running_receiver() as receiver,
        running_server(server_settings(db)) as base,
        aiohttp.ClientSession() as http,
    ):
        await _subscribe(http, base, key, receiver.url, rate_limit_per_second=RATE)
        await asyncio.gather(*(_publish(http, base, key, n) for n in range(PACED_EVENTS)))
        await receiver.wait_for(lambda got: len(got) >= PACED_EVENTS, timeout_s=PACED_EVENTS / RATE + 10)

    arrivals = [r.arrived_at for r in receiver.requests]
    busiest = max(sum(start <= t < start + 1.0 for t in arrivals) for start in arrivals)
    assert busiest <= RATE, sorted(arrivals)
    assert len(receiver.event_ids()) == PACED_EVENTS


CALL_EVENTS = 5


async def test_an_ordered_subscription_gets_a_calls_events_in_order_through_a_retry(tmp_path: Path) -> None:
    """The call's first event fails once; the later ones wait for its retry instead of overtaking it."""
    db = tmp_path / "o.db"
    key = await provision_key(db, "cus_o", SCOPES)
    failed_once: set[str] = set()

    def first_attempt_of_the_first_event_fails(request: Received) -> int:
        if request.json()["data"]["n"] == 0 and not failed_once:
            failed_once.add(request.headers["webhook-id"])
            return 500
        return 200

    settings = server_settings(db, WEBHOOKD_RETRY_SCHEDULE="0,0.3,0.3")
    async with (
        running_receiver(Receiver(first_attempt_of_the_first_event_fails)) as receiver,
        running_server(settings) as base,
        aiohttp.ClientSession() as http,
    ):
        await _subscribe(http, base, key, receiver.url, ordered=True)
        for n in range(CALL_EVENTS):
            await _publish(http, base, key, n, ordering_key="call-1")
        await receiver.wait_for(lambda got: sum(r.status == 200 for r in got) >= CALL_EVENTS, timeout_s=20)

    sent = [(r.json()["data"]["n"], r.status) for r in receiver.requests]
    assert sent == [(0, 500), *((n, 200) for n in range(CALL_EVENTS))]
