"""The bench side of ``bench/receiver.py``: start it, wait until enough ids arrived, read its records."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import procs

POLL_S = 0.05
STALL_S = 30.0
EXITED_STALL_S = 3.0


@dataclass(frozen=True)
class Receiver:
    """One receiver process, or several sharing the hook's port, each with its own stats URL."""

    procs: tuple[procs.Proc, ...]
    base_url: str
    stats_urls: tuple[str, ...]

    @property
    def hook_url(self) -> str:
        return f"{self.base_url}/hook"

    @property
    def proc(self) -> procs.Proc:
        """The first (for a single receiver: the) process."""
        return self.procs[0]


@contextlib.asynccontextmanager
async def running_receiver(
    workdir: Path, name: str, *, record_latency: bool = False, delay_s: float = 0.0, processes: int = 1
) -> AsyncIterator[Receiver]:
    port = procs.free_port()
    cmd = procs.python_module("bench.receiver", "--port", str(port), "--delay-s", str(delay_s))
    if record_latency:
        cmd.append("--record-latency")
    base_url = f"http://{procs.HOST}:{port}"
    if processes == 1:
        async with procs.running(name, cmd, procs.base_env(), workdir / f"{name}.log", base_url) as proc:
            yield Receiver((proc,), base_url, (base_url,))
        return
    async with contextlib.AsyncExitStack() as stack:
        started, stats_urls = [], []
        for n in range(processes):
            stats_port = procs.free_port()
            stats_urls.append(f"http://{procs.HOST}:{stats_port}")
            started.append(
                await stack.enter_async_context(
                    procs.running(
                        f"{name}-{n}",
                        [*cmd, "--stats-port", str(stats_port)],
                        procs.base_env(),
                        workdir / f"{name}-{n}.log",
                        stats_urls[-1],
                    )
                )
            )
        yield Receiver(tuple(started), base_url, tuple(stats_urls))


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        response.raise_for_status()
        return orjson.loads(await response.read())


async def _stats(session: aiohttp.ClientSession, receiver: Receiver) -> dict[str, Any]:
    """Every process's counts together (an id that reached two processes counts twice)."""
    parts = [await _get_json(session, f"{url}/stats") for url in receiver.stats_urls]
    times = {
        key: [p[key] for p in parts if p[key] is not None]
        for key in ("first_at", "last_new_at", "last_any_at")
    }
    return {
        "requests": sum(p["requests"] for p in parts),
        "distinct": sum(p["distinct"] for p in parts),
        "first_at": min(times["first_at"], default=None),
        "last_new_at": max(times["last_new_at"], default=None),
        "last_any_at": max(times["last_any_at"], default=None),
    }


async def stats(receiver: Receiver) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        return await _stats(session, receiver)


async def latencies(receiver: Receiver) -> list[tuple[str, float | None, float]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        rows = [row for url in receiver.stats_urls for row in await _get_json(session, f"{url}/latencies")]
        return [(str(r[0]), r[1], float(r[2])) for r in rows]


async def wait_for_distinct(
    receiver: Receiver, target: int, timeout_s: float, producer: procs.Proc | None = None
) -> dict[str, Any]:
    """Poll /stats until ``target`` distinct ids arrived, ``timeout_s`` passed, or arrivals stalled
    (``STALL_S`` without a new id, or a few seconds once ``producer`` has exited)."""
    deadline = time.monotonic() + timeout_s
    last_change, last_distinct = time.monotonic(), -1
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while True:
            found = await _stats(session, receiver)
            now = time.monotonic()
            if found["distinct"] != last_distinct:
                last_change, last_distinct = now, found["distinct"]
            exited = producer is not None and producer.popen.poll() is not None
            stalled = now - last_change > (EXITED_STALL_S if exited else STALL_S)
            if found["distinct"] >= target or now > deadline or stalled:
                found["complete"] = found["distinct"] >= target
                return found
            await asyncio.sleep(POLL_S)
