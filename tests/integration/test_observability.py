"""Metrics a real run exports, the dashboard and alert rules that query them, deploy files, logs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from tests.integration.harness import (
    auth,
    free_port,
    running_receiver,
    subprocess_env,
    webhookd_command,
    webhookd_process,
)
from tests.paths import CARRIER_FIXTURES

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "webhookd.json"
ALERTS = ROOT / "deploy" / "alerts.yml"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
METRIC_NAME = re.compile(r"\bwebhookd_[a-z0-9_]+")
TWILIO_TOKEN = "observability_test_auth_token_0000"


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_queries() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _cli(env: dict[str, str], *args: str) -> dict[str, str]:
    done = subprocess.run(webhookd_command(*args), env=env, capture_output=True, check=True)
    printed: dict[str, str] = json.loads(done.stdout)
    return printed


async def _traffic(http: aiohttp.ClientSession, base: str, env: dict[str, str], hook: str) -> list[str]:
    """Subscribe, rotate, publish, deliver and ingest a Twilio callback; return every secret used."""
    key = _cli(
        env,
        "keys",
        "create",
        "--json",
        "--customer",
        "acme",
        "--scopes",
        "manage_webhooks,publish_events,read_events",
    )["key"]
    source = _cli(
        env,
        "sources",
        "create",
        "--json",
        "--customer",
        "acme",
        "--carrier",
        "twilio",
        "--credential",
        f"auth_token={TWILIO_TOKEN}",
    )
    async with http.post(
        f"{base}/api/v1/webhook-subscriptions",
        headers=auth(key),
        json={"url": hook, "events": ["call.completed"]},
    ) as response:
        sub = await response.json()
    async with http.post(
        f"{base}/api/v1/webhook-subscriptions/{sub['id']}/rotate-secret", headers=auth(key)
    ) as response:
        rotated = await response.json()
    async with http.get(f"{base}/api/v1/callback-secret", headers=auth(key)) as response:
        callback = await response.json()
    for _ in range(3):
        async with http.post(
            f"{base}/api/v1/events", headers=auth(key), json={"type": "call.completed", "data": {}}
        ) as response:
            assert response.status == 202
    body = (CARRIER_FIXTURES / "twilio" / "04_completed.form").read_bytes()
    url = f"{base}/ingest/twilio/{source['id']}"
    params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    for sig, status in ((signature, 200), ("bad-signature", 401)):
        async with http.post(url, data=body, headers={"X-Twilio-Signature": sig}) as response:
            assert response.status == status
    return [key, TWILIO_TOKEN, sub["secret"], rotated["secret"], callback["secret"], signature]


@pytest.fixture
def node(tmp_path: Path) -> tuple[dict[str, str], str, Path]:
    port = free_port()
    env = subprocess_env(
        {
            "WEBHOOKD_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
            "WEBHOOKD_PORT": str(port),
            "WEBHOOKD_LOG_FORMAT": "json",
        }
    )
    env.pop("WEBHOOKD_MASTER_KEY")  # exercise the key file made beside the database
    return env, f"http://127.0.0.1:{port}", tmp_path / "webhookd.log"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SUCCESS = ("webhookd_delivery_attempts_total", (("outcome", "success"), ("status_class", "2xx")))
LATENCY = ("webhookd_delivery_latency_seconds_count", ())
DELIVERIES = 4
"""What ``_traffic`` makes: three published events and the Twilio callback's ``call.completed``."""


def samples_of(text: str) -> Samples:
    families = text_string_to_metric_families(text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


async def scrape_until(
    http: aiohttp.ClientSession, base: str, ready: Callable[[Samples], bool], timeout_s: float = 10
) -> str:
    """The first ``/metrics`` text whose samples satisfy ``ready``: a worker counts an attempt only
    after the endpoint has answered, so the receiver can hold a request the metrics do not show yet."""

    async def poll() -> str:
        while True:
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 200
                text = await response.text()
            if ready(samples_of(text)):
                return text
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout_s)


async def test_a_real_run_exports_every_metric_the_dashboard_and_alerts_query(
    node: tuple[dict[str, str], str, Path],
) -> None:
    env, base, log = node
    async with (
        running_receiver() as receiver,
        aiohttp.ClientSession() as http,
        webhookd_process(env, base, log),
    ):
        await _traffic(http, base, env, receiver.url)
        await receiver.wait_for(lambda got: len(got) >= DELIVERIES)
        text = await scrape_until(
            http, base, lambda got: got.get(SUCCESS, 0) >= DELIVERIES and got.get(LATENCY, 0) >= DELIVERIES
        )
        assert len(receiver.requests) == DELIVERIES

    families = list(text_string_to_metric_families(text))
    exported = {sample.name for family in families for sample in family.samples}
    queried = {name for expr in dashboard_queries() + alert_queries() for name in METRIC_NAME.findall(expr)}
    assert queried and queried <= exported, sorted(queried - exported)
    for family in families:
        if family.name.startswith("webhookd_"):
            assert family.documentation, family.name
    samples = samples_of(text)
    assert samples[("webhookd_ingest_requests_total", (("carrier", "twilio"), ("outcome", "accepted")))] == 1
    assert (
        samples[("webhookd_ingest_requests_total", (("carrier", "twilio"), ("outcome", "invalid_signature")))]
        == 1
    )
    assert samples[SUCCESS] == DELIVERIES
    assert samples[LATENCY] == DELIVERIES


async def test_no_secret_key_or_signature_reaches_the_logs(node: tuple[dict[str, str], str, Path]) -> None:
    env, base, log = node
    async with (
        running_receiver() as receiver,
        aiohttp.ClientSession() as http,
        webhookd_process(env, base, log) as process,
    ):
        secrets = await _traffic(http, base, env, receiver.url)
        await receiver.wait_for(lambda got: len(got) >= 4)
        secrets += [r.headers["webhook-signature"] for r in receiver.requests]
        process.send_signal(signal.SIGTERM)
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(lines) > 5
    assert all(line.get("action") and "request_id" in line for line in lines)
    for secret in secrets:
        for piece in secret.split(" "):  # a rotation's signature header holds two signatures
            assert piece.removeprefix("v1,") not in text
    master_key = (log.parent / "webhookd.key").read_text().strip()
    assert master_key not in text


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing; .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus); CI installs it")
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 rules found" in done.stdout


def test_compose_parses_and_every_mounted_file_exists() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert set(compose["services"]) >= {"webhookd", "postgres", "prometheus", "grafana"}
    mounts = [
        volume.split(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if volume.startswith(".")
    ]
    assert mounts
    for mount in mounts:
        assert (COMPOSE.parent / mount).exists(), mount
    build = compose["services"]["webhookd"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).exists()
    assert (COMPOSE.parent / compose["services"]["webhookd"]["env_file"]).exists()


def test_dockerfile_is_slim_non_root_and_healthchecked() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^USER webhookd$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), path


def test_grafana_provisioning_points_at_the_dashboards() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/webhookd.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert any(v.endswith(f":{path}:ro") for v in compose["services"]["grafana"]["volumes"])
    assert json.loads(DASHBOARD.read_text())["panels"]


async def test_a_standalone_worker_serves_its_delivery_metrics(
    node: tuple[dict[str, str], str, Path],
) -> None:
    env, base, log = node
    metrics_port = free_port()
    worker_env = {**env, "WEBHOOKD_WORKER_METRICS_PORT": str(metrics_port)}
    async with (
        running_receiver() as receiver,
        aiohttp.ClientSession() as http,
        webhookd_process(env, base, log, "serve", "--no-workers"),
    ):
        key = _cli(
            env,
            "keys",
            "create",
            "--json",
            "--customer",
            "acme",
            "--scopes",
            "manage_webhooks,publish_events",
        )["key"]
        async with http.post(
            f"{base}/api/v1/webhook-subscriptions",
            headers=auth(key),
            json={"url": receiver.url, "events": ["call.completed"]},
        ) as response:
            assert response.status == 201
        async with http.post(
            f"{base}/api/v1/events", headers=auth(key), json={"type": "call.completed", "data": {}}
        ) as response:
            assert response.status == 202
        with (log.parent / "worker.log").open("ab") as out:
            worker = subprocess.Popen(webhookd_command("worker"), env=worker_env, stdout=out, stderr=out)
        try:
            await receiver.wait_for(lambda got: len(got) == 1)
            # The receiver can see the POST before the worker has counted its answer: poll.
            samples = await _successes_once_counted(http, f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            worker.send_signal(signal.SIGTERM)
            await asyncio.to_thread(worker.wait, 15)
    assert samples["webhookd_delivery_attempts_total"] == 1


async def _successes_once_counted(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The worker's unlabelled and ``outcome="success"`` samples, once it has counted an attempt."""
    async with asyncio.timeout(10):
        while True:
            async with http.get(url) as response:
                text = await response.text()
            samples = {
                s.name: s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if not s.labels or s.labels.get("outcome") == "success"
            }
            if samples.get("webhookd_delivery_attempts_total", 0) >= 1:
                return samples
            await asyncio.sleep(0.05)
