"""The SSRF guard at subscription time (API) and at connect time (sender), against real sockets."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import aiohttp
import pytest

from tests.integration.harness import (
    auth,
    count_rows,
    provision_key,
    running_receiver,
    running_server,
    server_settings,
)
from webhookd.delivery.sender import AiohttpSender
from webhookd.delivery.ssrf import AddressGuard
from webhookd.exceptions import DestinationBlocked
from webhookd.models import Scope

pytestmark = pytest.mark.anyio

# IPv6 forms that carry an internal IPv4 address to a host stack or a NAT64/SIIT translator.
IPV6_FORMS_OF_IPV4 = [
    "http://[::127.0.0.1]/hook",
    "http://[::169.254.169.254]/latest",
    "http://[::ffff:0:127.0.0.1]/hook",
    "http://[64:ff9b:1::7f00:1]/hook",
]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://0x7f000001/hook",
        "http://[::1]/hook",
        "http://10.0.0.5/hook",
        *IPV6_FORMS_OF_IPV4,
    ],
)
async def test_private_destinations_are_refused_at_create(tmp_path: Path, url: str) -> None:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS})
    settings = server_settings(db, WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS="false")
    async with running_server(settings) as base, aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/v1/webhook-subscriptions",
            headers=auth(key),
            json={"url": url, "events": ["call.completed"]},
        ) as response:
            assert response.status == 400
            body = await response.json()
    assert body["error"]["code"] == "destination_blocked"
    assert count_rows(db, "subscriptions") == 0


async def test_connect_time_guard_blocks_a_name_that_resolves_to_loopback() -> None:
    """A name checked earlier can later resolve to 127.0.0.1 (DNS rebinding): the sender's own
    resolver refuses it, so the live receiver on that port never sees a request."""
    async with running_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        sender = AiohttpSender(timeout_s=2, max_connections=2, guard=AddressGuard())
        try:
            with pytest.raises(DestinationBlocked, match="localhost"):
                await sender.send(f"http://localhost:{port}/hook", b"{}", {})
            with pytest.raises(DestinationBlocked):
                await sender.send(f"http://127.0.0.1:{port}/hook", b"{}", {})
        finally:
            await sender.close()
    assert receiver.requests == []


async def test_allowlisted_cidr_is_delivered_to() -> None:
    async with running_receiver() as receiver:
        guard = AddressGuard(allowed=(ipaddress.ip_network("127.0.0.0/8"),))
        sender = AiohttpSender(timeout_s=2, max_connections=2, guard=guard)
        try:
            port = receiver.url.split(":")[2].split("/")[0]
            response = await sender.send(f"http://localhost:{port}/hook", b"{}", {})
        finally:
            await sender.close()
    assert response.status == 200
    assert len(receiver.requests) == 1
