"""Several webhookd processes sharing one PostgreSQL database (issue: many processes, many machines)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.harness import (
    POSTGRES_DSN,
    Received,
    Receiver,
    auth,
    free_port,
    psql,
    running_receiver,
    subprocess_env,
    webhookd_command,
    webhookd_process,
)
from webhookd.store.scheduling import WORKER_DEAD_AFTER_S

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EVENTS = 5000


@dataclass
class Cluster:
    env: dict[str, str]
    api: str
    logs: Path

    def command_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, **extra}


def _cluster(schema: str, tmp_path: Path) -> Cluster:
    port = free_port()
    # asyncpg passes unknown query parameters on to the server as settings: each test gets its schema.
    env = subprocess_env(
        {
            "WEBHOOKD_DATABASE_URL": f"{POSTGRES_DSN}?search_path={schema}",
            "WEBHOOKD_PORT": str(port),
            "WEBHOOKD_DELIVERY_TIMEOUT_S": "0.95",
            "WEBHOOKD_RATE_LIMIT_PER_MIN": "100000",
        }
    )
    return Cluster(env, f"http://127.0.0.1:{port}", tmp_path)


def _key(cluster: Cluster) -> str:
    import json

    done = subprocess.run(
        webhookd_command(
            "keys", "create", "--json", "--customer", "acme", "--scopes", "manage_webhooks,publish_events"
        ),
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
    )
    key: str = json.loads(done.stdout)["key"]
    return key


@contextlib.asynccontextmanager
async def _workers(cluster: Cluster, count: int) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    processes = []
    for n in range(count):
        with (cluster.logs / f"worker-{n}.log").open("ab") as out:
            processes.append(
                subprocess.Popen(
                    webhookd_command("worker"), env=cluster.env, stdout=out, stderr=subprocess.STDOUT
                )
            )
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            await asyncio.to_thread(process.wait, 20)


async def _publish(http: aiohttp.ClientSession, cluster: Cluster, key: str, count: int) -> set[str]:
    gate = asyncio.Semaphore(32)

    async def one(n: int) -> str:
        async with (
            gate,
            http.post(
                f"{cluster.api}/api/v1/events",
                headers=auth(key),
                json={"type": "call.completed", "data": {"n": n}},
            ) as response,
        ):
            assert response.status == 202
            event_id: str = (await response.json())["id"]
            return event_id

    return set(await asyncio.gather(*[one(n) for n in range(count)]))


async def _subscribe(
    http: aiohttp.ClientSession, cluster: Cluster, key: str, receiver: Receiver, **options: Any
) -> None:
    async with http.post(
        f"{cluster.api}/api/v1/webhook-subscriptions",
        headers=auth(key),
        json={"url": receiver.url, "events": ["call.completed"], **options},
    ) as response:
        assert response.status == 201


def _ids(requests: list[Received]) -> Counter[str]:
    return Counter(r.headers["webhook-id"] for r in requests)


async def test_two_workers_and_an_api_node_deliver_each_event_exactly_once(
    schema: str, tmp_path: Path
) -> None:
    cluster = _cluster(schema, tmp_path)
    key = _key(cluster)
    async with (
        running_receiver() as receiver,
        aiohttp.ClientSession() as http,
        webhookd_process(cluster.env, cluster.api, tmp_path / "api.log", "serve", "--no-workers"),
    ):
        await _subscribe(http, cluster, key, receiver)
        async with _workers(cluster, 2):
            published = await _publish(http, cluster, key, EVENTS)
            await receiver.wait_for(lambda got: published <= set(_ids(got)), timeout_s=120)
            await asyncio.sleep(0.5)  # anything sent twice would show up now
    counts = _ids(receiver.requests)
    assert set(counts) == published
    assert max(counts.values()) == 1  # nothing failed, so nothing was sent twice


async def test_kill_9_of_one_worker_loses_nothing_and_its_claims_go_out_within_seconds(
    schema: str, tmp_path: Path
) -> None:
    """The survivor takes the dead worker's claims once its heartbeat is ``WORKER_DEAD_AFTER_S``
    old: the drain ends well inside 20 s of that, not after a minute's lease."""
    cluster = _cluster(schema, tmp_path)
    key = _key(cluster)
    async with (
        running_receiver() as receiver,
        aiohttp.ClientSession() as http,
        webhookd_process(cluster.env, cluster.api, tmp_path / "api.log", "serve", "--no-workers"),
    ):
        receiver.delay_s = 0.01
        await _subscribe(http, cluster, key, receiver)
        published = await _publish(http, cluster, key, 2000)
        async with _workers(cluster, 2) as (victim, _):
            await receiver.wait_for(lambda got: len(got) >= 300, timeout_s=60)
            victim.send_signal(signal.SIGKILL)
            await receiver.wait_for(
                lambda got: published <= set(_ids(got)), timeout_s=WORKER_DEAD_AFTER_S + 20
            )
    assert published <= set(_ids(receiver.requests))


async def test_concurrent_idempotent_creates_on_two_api_nodes_give_one_subscription(
    schema: str, tmp_path: Path
) -> None:
    first, second = _cluster(schema, tmp_path), _cluster(schema, tmp_path)
    key = _key(first)
    body = {"url": "https://hooks.example.test/one", "events": ["call.completed", "call.failed"]}
    async with (
        aiohttp.ClientSession() as http,
        webhookd_process(first.env, first.api, tmp_path / "a.log", "serve", "--no-workers"),
        webhookd_process(second.env, second.api, tmp_path / "b.log", "serve", "--no-workers"),
    ):

        async def create(node: Cluster) -> tuple[int, str]:
            async with http.post(
                f"{node.api}/api/v1/webhook-subscriptions", headers=auth(key), json=body
            ) as response:
                return response.status, (await response.json())["id"]

        answers = await asyncio.gather(*[create(node) for node in (first, second) * 10])
        async with http.get(f"{first.api}/api/v1/webhook-subscriptions", headers=auth(key)) as response:
            listed = (await response.json())["data"]
    assert len({sub_id for _, sub_id in answers}) == 1
    assert sorted(status for status, _ in answers).count(201) == 1
    assert len(listed) == 1


def _busiest(requests: list[Received], window_s: float) -> int:
    """The most requests that arrived within ``window_s`` of one another."""
    arrivals = [r.arrived_at for r in requests]
    return max(sum(start <= t < start + window_s for t in arrivals) for start in arrivals)


CAP = 4
HOLD_S = 0.4


async def _two_workers_drain(
    schema: str, tmp_path: Path, receiver: Receiver, events: int, env: dict[str, str], **options: Any
) -> None:
    """An API node and two workers on one schema deliver ``events`` to one subscription."""
    cluster = _cluster(schema, tmp_path)
    cluster.env.update(env)
    key = _key(cluster)
    async with (
        running_receiver(receiver),
        aiohttp.ClientSession() as http,
        webhookd_process(cluster.env, cluster.api, tmp_path / "api.log", "serve", "--no-workers"),
    ):
        await _subscribe(http, cluster, key, receiver, **options)
        published = await _publish(http, cluster, key, events)
        async with _workers(cluster, 2):
            await receiver.wait_for(lambda got: published <= set(_ids(got)), timeout_s=60)


async def test_the_per_subscription_cap_counts_both_workers_claims(schema: str, tmp_path: Path) -> None:
    """Each answer takes HOLD_S, so requests that arrive within that of one another were in flight
    together: never more than the cap, though two workers each have 64 slots."""
    receiver = Receiver(delay_s=HOLD_S)
    await _two_workers_drain(
        schema, tmp_path, receiver, 40, {"WEBHOOKD_MAX_IN_FLIGHT_PER_SUBSCRIPTION": str(CAP)}
    )
    assert _busiest(receiver.requests, HOLD_S * 0.9) <= CAP


async def test_a_rate_limit_holds_across_two_workers(schema: str, tmp_path: Path) -> None:
    receiver = Receiver()
    await _two_workers_drain(schema, tmp_path, receiver, 20, {}, rate_limit_per_second=5)
    assert _busiest(receiver.requests, 1.0) <= 5


GRACE_S = 1.0
STOP_MARGIN_S = 5.0
"""What a stop may take beyond the grace period: closing the pool and the sender, and the interpreter's
exit, on a loaded two-core machine."""


async def test_busy_workers_stop_within_the_grace_period_and_release_what_they_held(
    schema: str, tmp_path: Path
) -> None:
    """Eight workers with attempts in flight to endpoints slower than the grace period, all told to
    stop at once: each exits within the grace period and a margin, and leaves no delivery claimed."""
    cluster = _cluster(schema, tmp_path)
    cluster.env |= {
        "WEBHOOKD_SHUTDOWN_GRACE_S": str(GRACE_S),
        "WEBHOOKD_WORKER_CONCURRENCY": "64",
        "WEBHOOKD_DELIVERY_TIMEOUT_S": "30",
    }
    key = _key(cluster)
    async with (
        running_receiver() as receiver,
        aiohttp.ClientSession() as http,
        webhookd_process(cluster.env, cluster.api, tmp_path / "api.log", "serve", "--no-workers"),
    ):
        receiver.delay_s = 5 * GRACE_S  # no attempt in flight at SIGTERM can finish in time
        for n in range(4):  # four subscriptions: 4 x 32 attempts in flight, shared by the workers
            await _subscribe(http, cluster, key, receiver, url=f"{receiver.url}/s{n}")
        await _publish(http, cluster, key, 500)
        async with _workers(cluster, 8) as workers:
            await receiver.wait_for(lambda got: len(got) >= 4 * 32, timeout_s=60)
            began = asyncio.get_running_loop().time()
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            codes = await asyncio.gather(*(asyncio.to_thread(w.wait, 30) for w in workers))
            took = asyncio.get_running_loop().time() - began
    assert codes == [0] * 8
    assert took < GRACE_S + STOP_MARGIN_S, f"the workers took {took:.1f}s to stop"
    held = psql(f"SELECT count(*) FROM {schema}.deliveries WHERE status = 'in_flight'", "-tA")
    assert held.returncode == 0 and held.stdout.strip() == "0", held
