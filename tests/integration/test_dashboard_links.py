"""Dashboard links without a browser: made by the API and by ``webhookd dashboard-link``, stored only as
their token's hash, and opened once into a session cookie with the attributes a session needs."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import pytest

from tests.integration.harness import (
    auth,
    provision_key,
    query,
    running_server,
    server_settings,
    subprocess_env,
    webhookd_command,
)
from webhookd.crypto import hash_token
from webhookd.models import Scope

pytestmark = pytest.mark.anyio


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


async def test_the_api_makes_a_link_stored_only_by_its_hash_that_expires_in_15_minutes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS})
    async with running_server(server_settings(db)) as base, aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/v1/dashboard-links", headers=auth(key)) as response:
            assert (response.status, response.headers["Cache-Control"]) == (201, "no-store")
            link = await response.json()
    assert set(link) == {"url", "expires_at"}
    assert link["url"].startswith(f"{base}/dashboard/login?token=")
    token = _token(link["url"])
    rows = query(db, "SELECT token_hash, customer_id, created_at, expires_at, used_at FROM dashboard_links")
    assert [(row[0], row[1], row[3] - row[2], row[4]) for row in rows] == [
        (hash_token(token), "acme", 900.0, None)
    ]
    assert token.encode() not in db.read_bytes()
    expires_at = datetime.fromisoformat(link["expires_at"])
    assert abs(expires_at.timestamp() - rows[0][3]) < 0.001


async def test_a_link_needs_the_manage_webhooks_scope(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.READ_EVENTS})
    async with running_server(server_settings(db)) as base, aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/v1/dashboard-links", headers=auth(key)) as response:
            assert response.status == 403
            assert (await response.json())["error"]["code"] == "forbidden"
        async with http.post(f"{base}/api/v1/dashboard-links") as response:
            assert response.status == 401
    assert query(db, "SELECT count(*) FROM dashboard_links") == [(0,)]


async def test_opening_a_link_sets_a_session_cookie_and_leaves_the_token_behind(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS})
    https = "https://hooks.example.com"
    async with running_server(server_settings(db, WEBHOOKD_PUBLIC_BASE_URL=https)) as base:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/v1/dashboard-links", headers=auth(key)) as response:
                url = (await response.json())["url"]
            assert url.startswith(f"{https}/dashboard/login?token=")
            login = f"{base}/dashboard/login?token={_token(url)}"
            async with http.get(login, allow_redirects=False) as response:  # shows the button, no more
                assert (response.status, "Set-Cookie" in response.headers) == (200, False)
                assert 'name="token"' in await response.text()
            form = {"token": _token(url)}
            async with http.post(f"{base}/dashboard/login", data=form, allow_redirects=False) as response:
                assert (response.status, response.headers["Location"]) == (303, "/dashboard")
                assert response.headers["Referrer-Policy"] == "no-referrer"
                cookie = response.headers["Set-Cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite", "path", "max-age"} <= attributes
    assert "samesite=lax" in cookie.lower() and "path=/dashboard" in cookie.lower()


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env({"WEBHOOKD_DATABASE_URL": f"sqlite:///{db}", "WEBHOOKD_PORT": "8181"})
    return subprocess.run(
        webhookd_command("dashboard-link", *args), env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
async def test_the_cli_prints_a_link_plain_and_as_json(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS})

    plain = _cli(db, "--customer", "acme")
    as_json = _cli(db, "--customer", "acme", "--json")

    assert plain.returncode == 0 and plain.stdout.startswith("http://127.0.0.1:8181/dashboard/login?token=")
    assert "opens once, until" in plain.stderr
    link = orjson.loads(as_json.stdout)
    assert (set(link), link["customer_id"], link["kind"]) == (
        {"url", "expires_at", "kind", "customer_id"},
        "acme",
        "customer",
    )
    hashes = {
        row[0] for row in query(db, "SELECT token_hash FROM dashboard_links WHERE customer_id = 'acme'")
    }
    assert hashes == {hash_token(_token(plain.stdout.strip())), hash_token(_token(link["url"]))}
    made = query(db, "SELECT expires_at - created_at FROM dashboard_links")
    assert made == [(900.0,), (900.0,)]


@pytest.mark.slow
async def test_the_cli_refuses_an_unknown_customer_and_lists_only_its_own_flags(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS})

    unknown = _cli(db, "--customer", "globex")
    helped = _cli(db, "--help")

    assert (unknown.returncode, unknown.stdout) == (2, "")
    assert "no customer globex yet" in unknown.stderr and "webhookd keys create" in unknown.stderr
    flags = {word for word in helped.stdout.split() if word.startswith("--")}
    assert {"--customer", "--admin", "--json", "--database-url", "--public-base-url"} <= flags
    assert "--dashboard-link-ttl-s" in flags
    assert not flags & {"--worker-concurrency", "--master-key", "--retry-schedule", "--no-workers"}


@pytest.mark.slow
async def test_the_cli_prints_an_operator_link_with_admin(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS})

    as_json = _cli(db, "--admin", "--json")
    both = _cli(db, "--admin", "--customer", "acme")
    neither = _cli(db, "--json")

    link = orjson.loads(as_json.stdout)
    assert (set(link), link["kind"], link["customer_id"]) == (
        {"url", "expires_at", "kind", "customer_id"},
        "operator",
        None,
    )
    assert link["url"].startswith("http://127.0.0.1:8181/dashboard/login?token=")
    rows = query(db, "SELECT token_hash, kind, customer_id, expires_at - created_at FROM dashboard_links")
    assert rows == [(hash_token(_token(link["url"])), "operator", None, 900.0)]
    assert (both.returncode, neither.returncode) == (2, 2)
    assert "not allowed with argument" in both.stderr
    assert "one of the arguments --customer --admin is required" in neither.stderr
