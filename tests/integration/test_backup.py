"""``webhookd backup`` copies the SQLite database while a real server takes a publishing burst; the copy,
restored with its key file, holds every event acknowledged before the backup began, and its
subscription secrets still sign deliveries."""

from __future__ import annotations

import asyncio
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

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

PUBLISHERS = 16
ACKS_BEFORE_BACKUP = 200


def _node_env(folder: Path) -> dict[str, str]:
    """A server's environment with no WEBHOOKD_MASTER_KEY: its key file is made beside the database."""
    folder.mkdir(exist_ok=True)
    env = subprocess_env(
        {"WEBHOOKD_DATABASE_URL": f"sqlite:///{folder / 'webhookd.db'}", "WEBHOOKD_PORT": str(free_port())}
    )
    del env["WEBHOOKD_MASTER_KEY"]
    return env


def _base(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['WEBHOOKD_PORT']}"


def _create_key(env: dict[str, str]) -> str:
    args = ("keys", "create", "--json", "--customer", "acme", "--scopes", "manage_webhooks,publish_events")
    done = subprocess.run(webhookd_command(*args), env=env, capture_output=True, check=True)
    key: str = orjson.loads(done.stdout)["key"]
    return key


async def _publish_until_stopped(http: aiohttp.ClientSession, base: str, key: str, acked: set[str]) -> None:
    while True:
        body = {"type": "call.completed", "data": {"n": len(acked)}}
        async with http.post(f"{base}/api/v1/events", headers=auth(key), json=body) as response:
            assert response.status == 202, await response.text()
            acked.add((await response.json())["id"])


async def _backup(env: dict[str, str], target: Path) -> dict[str, object]:
    process = await asyncio.create_subprocess_exec(
        *webhookd_command("backup", str(target), "--json"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    printed: dict[str, object] = orjson.loads(out)
    return printed


async def test_a_backup_taken_during_a_burst_restores_every_event_acknowledged_before_it(
    tmp_path: Path,
) -> None:
    live = _node_env(tmp_path / "live")
    key, target, acked = _create_key(live), tmp_path / "backup.db", set[str]()
    async with running_receiver() as receiver, aiohttp.ClientSession() as http:
        async with webhookd_process(live, _base(live), tmp_path / "live.log"):
            async with http.post(
                f"{_base(live)}/api/v1/webhook-subscriptions",
                headers=auth(key),
                json={"url": receiver.url, "events": ["call.completed"]},
            ) as response:
                created = await response.json()
            publishers = [
                asyncio.create_task(_publish_until_stopped(http, _base(live), key, acked))
                for _ in range(PUBLISHERS)
            ]
            await eventually(lambda: len(acked) >= ACKS_BEFORE_BACKUP, timeout_s=30, interval_s=0.005)
            before = set(acked)
            printed = await _backup(live, target)
            during = len(acked) - len(before)
            for task in publishers:
                task.cancel()
            await asyncio.gather(*publishers, return_exceptions=True)

        assert during > 0, "the server kept acknowledging publishes while the backup ran"
        assert printed["path"] == str(target) and printed["bytes"] == target.stat().st_size
        assert printed["key_file"] == str(tmp_path / "live" / "webhookd.key")
        assert stat.S_IMODE(target.stat().st_mode) == 0o600

        restored = _node_env(tmp_path / "restored")
        shutil.copy(target, tmp_path / "restored" / "webhookd.db")
        shutil.copy(tmp_path / "live" / "webhookd.key", tmp_path / "restored" / "webhookd.key")
        stored = {row[0] for row in query(tmp_path / "restored" / "webhookd.db", "SELECT id FROM events")}
        assert before <= stored
        async with webhookd_process(restored, _base(restored), tmp_path / "restored.log"):
            # The restored subscription's secret decrypts under the restored key file, and signs.
            test_url = f"{_base(restored)}/api/v1/webhook-subscriptions/{created['id']}/test"
            async with http.post(test_url, headers=auth(key)) as response:
                assert response.status == 202, await response.text()
                test_event = (await response.json())["id"]
            await receiver.wait_for(lambda got: any(r.headers["webhook-id"] == test_event for r in got))
    sent = next(r for r in receiver.requests if r.headers["webhook-id"] == test_event)
    Webhook(created["secret"]).verify(sent.body, sent.headers)


async def test_a_backup_never_overwrites_a_file(tmp_path: Path) -> None:
    env = _node_env(tmp_path / "live")
    subprocess.run(webhookd_command("migrate"), env=env, check=True, capture_output=True)
    target = tmp_path / "taken.db"
    target.write_bytes(b"keep me")

    done = subprocess.run(webhookd_command("backup", str(target)), env=env, capture_output=True, text=True)

    assert done.returncode == 2
    assert f"{target} exists: a backup never overwrites a file; name a new one" in done.stderr
    assert target.read_bytes() == b"keep me"


def test_on_postgresql_backup_explains_pg_dump(tmp_path: Path) -> None:
    url = "postgresql://webhookd:hunter2@db.example.com/webhookd"
    env = {**subprocess_env({}), "WEBHOOKD_DATABASE_URL": url}

    done = subprocess.run(
        [sys.executable, "-m", "webhookd", "backup", str(tmp_path / "b.dump")],
        env=env,
        capture_output=True,
        text=True,
    )

    assert done.returncode == 2
    assert "pg_dump --format=custom --file" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert not (tmp_path / "b.dump").exists()
