"""kill -9 and SIGTERM against a real webhookd process; after a restart, nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.integration.harness import (
    auth,
    eventually,
    free_port,
    query,
    running_receiver,
    subprocess_env,
    webhookd_command,
    webhookd_process,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PUBLISHERS = 32
ACKS_BEFORE_KILL = 400


async def _publisher(http: aiohttp.ClientSession, base: str, key: str, acked: set[str], n: int) -> None:
    seq = 0
    while True:
        seq += 1
        body = {"type": "call.completed", "data": {"publisher": n, "seq": seq}}
        try:
            async with http.post(f"{base}/api/v1/events", headers=auth(key), json=body) as response:
                if response.status == 202:
                    acked.add((await response.json())["id"])
        except (TimeoutError, aiohttp.ClientError):
            return  # the server is gone


def _create_key(env: dict[str, str]) -> str:
    done = subprocess.run(
        webhookd_command(
            "keys", "create", "--json", "--customer", "acme", "--scopes", "manage_webhooks,publish_events"
        ),
        env=env,
        capture_output=True,
        check=True,
    )
    printed = json.loads(done.stdout)
    assert printed["customer_id"] == "acme"
    key: str = printed["key"]
    return key


@dataclass(frozen=True)
class Node:
    """One webhookd installation: its environment, address, API key (made by the CLI) and log."""

    env: dict[str, str]
    base: str
    key: str
    log: Path

    @classmethod
    def create(cls, tmp_path: Path, **env: str) -> Node:
        port = free_port()
        full_env = subprocess_env(
            {"WEBHOOKD_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "WEBHOOKD_PORT": str(port), **env}
        )
        return cls(full_env, f"http://127.0.0.1:{port}", _create_key(full_env), tmp_path / "webhookd.log")

    def process(self) -> contextlib.AbstractAsyncContextManager[subprocess.Popen[bytes]]:
        return webhookd_process(self.env, self.base, self.log)

    async def subscribe(self, http: aiohttp.ClientSession, url: str) -> None:
        body = {"url": url, "events": ["call.completed"]}
        async with http.post(
            f"{self.base}/api/v1/webhook-subscriptions", headers=auth(self.key), json=body
        ) as response:
            assert response.status == 201

    async def publish(self, http: aiohttp.ClientSession, count: int) -> set[str]:
        async def one(n: int) -> str:
            body = {"type": "call.completed", "data": {"n": n}}
            async with http.post(f"{self.base}/api/v1/events", headers=auth(self.key), json=body) as response:
                assert response.status == 202
                event_id: str = (await response.json())["id"]
                return event_id

        return set(await asyncio.gather(*[one(n) for n in range(count)]))


async def test_kill_9_during_burst_loses_no_acknowledged_event(tmp_path: Path) -> None:
    node = Node.create(tmp_path, WEBHOOKD_DELIVERY_TIMEOUT_S="0.45")
    acked: set[str] = set()
    async with running_receiver() as receiver, aiohttp.ClientSession() as http:
        async with node.process() as process:
            await node.subscribe(http, receiver.url)
            publishers = [
                asyncio.create_task(_publisher(http, node.base, node.key, acked, n))
                for n in range(PUBLISHERS)
            ]
            await eventually(lambda: len(acked) >= ACKS_BEFORE_KILL, timeout_s=30, interval_s=0.005)
            process.send_signal(signal.SIGKILL)
            await asyncio.gather(*publishers)
            await asyncio.to_thread(process.wait, 10)
        assert len(acked) >= ACKS_BEFORE_KILL
        async with node.process():
            await receiver.wait_for(lambda _: acked <= receiver.event_ids(), timeout_s=60)
    assert acked <= receiver.event_ids()


async def test_kill_9_during_delivery_loses_nothing(tmp_path: Path) -> None:
    node = Node.create(tmp_path, WEBHOOKD_DELIVERY_TIMEOUT_S="0.45")
    async with running_receiver() as receiver, aiohttp.ClientSession() as http:
        receiver.delay_s = 0.05
        async with node.process() as process:
            await node.subscribe(http, receiver.url)
            published = await node.publish(http, 300)
            await receiver.wait_for(lambda got: len(got) >= 50)
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait, 10)
        assert len(receiver.event_ids()) < len(published)  # the kill really interrupted delivery
        async with node.process():
            await receiver.wait_for(lambda _: published <= receiver.event_ids(), timeout_s=60)


@pytest.mark.parametrize(("answer_s", "grace_s", "released"), [(0.3, 5.0, False), (3.0, 0.3, True)])
async def test_sigterm_finishes_in_flight_or_releases_it(
    tmp_path: Path, answer_s: float, grace_s: float, released: bool
) -> None:
    node = Node.create(tmp_path, WEBHOOKD_SHUTDOWN_GRACE_S=str(grace_s), WEBHOOKD_WORKER_CONCURRENCY="4")
    async with running_receiver() as receiver, aiohttp.ClientSession() as http:
        receiver.delay_s = answer_s
        async with node.process() as process:
            await node.subscribe(http, receiver.url)
            published = await node.publish(http, 40)
            await receiver.wait_for(lambda got: len(got) >= 4)  # all four slots busy
            process.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells it.
            assert await asyncio.to_thread(process.wait, 10) in (0, -signal.SIGTERM)
        text = node.log.read_text()
        assert "delivery worker stopped" in text and "Application shutdown complete" in text
        assert ("released 4 unfinished deliveries" in text) is released
        receiver.delay_s = 0  # the restart below need not wait on a slow endpoint
        if not released:  # the four in flight at SIGTERM finished and were recorded as delivered
            rows = query(tmp_path / "w.db", "SELECT count(*) FROM deliveries WHERE status = 'delivered'")
            assert rows == [(4,)]
        assert len(receiver.event_ids()) < len(published)
        async with node.process():
            await receiver.wait_for(lambda _: published <= receiver.event_ids(), timeout_s=30)
