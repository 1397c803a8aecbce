"""webhookd as the benchmarks run it: environment, API key, subscription, server and worker."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import procs

EVENT_TYPE = "call.completed"
CUSTOMER = "bench"
SCOPES = "manage_webhooks,publish_events"


@dataclass(frozen=True)
class Webhookd:
    """One webhookd installation: a database in ``workdir`` and the env every process shares."""

    workdir: Path
    env: dict[str, str]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{procs.HOST}:{self.port}"


def new_webhookd(workdir: Path, **extra_env: str) -> Webhookd:
    port = procs.free_port()
    env = procs.base_env()
    env.update(
        {
            "WEBHOOKD_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
            "WEBHOOKD_HOST": procs.HOST,
            "WEBHOOKD_PORT": str(port),
            "WEBHOOKD_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "WEBHOOKD_LOG_FORMAT": "json",
            "WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS": "true",
            **extra_env,
        }
    )
    return Webhookd(workdir, env, port)


def create_key(wh: Webhookd, customer: str = CUSTOMER, scopes: str = SCOPES) -> str:
    cmd = procs.python_module(
        "webhookd", "keys", "create", "--json", "--customer", customer, "--scopes", scopes
    )
    created: dict[str, Any] = orjson.loads(procs.run_cli(cmd, wh.env))
    key: str = created["key"]
    return key


def auth_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


async def create_subscription(wh: Webhookd, key: str, url: str) -> dict[str, Any]:
    body = {"url": url, "events": [EVENT_TYPE], "description": "bench"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(
            f"{wh.base_url}/api/v1/webhook-subscriptions", data=orjson.dumps(body), headers=auth_headers(key)
        ) as response,
    ):
        answer: dict[str, Any] = orjson.loads(await response.read())
        if response.status != 201:
            raise RuntimeError(f"subscription create answered {response.status}: {answer}")
        return answer


@contextlib.asynccontextmanager
async def serving(wh: Webhookd, *, workers: bool, log_name: str) -> AsyncIterator[procs.Proc]:
    args = ["serve", "--no-workers"] if not workers else ["serve"]
    cmd = procs.python_module("webhookd", *args)
    async with procs.running(log_name, cmd, wh.env, wh.workdir / f"{log_name}.log", wh.base_url) as proc:
        yield proc


def start_worker(wh: Webhookd, concurrency: int) -> procs.Proc:
    env = {**wh.env, "WEBHOOKD_WORKER_CONCURRENCY": str(concurrency)}
    cmd = procs.python_module("webhookd", "worker")
    return procs.start("webhookd worker", cmd, env, wh.workdir / "worker.log")
