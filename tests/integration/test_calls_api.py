"""``GET /api/v1/calls`` and ``/calls/{call_ref}`` over a real server: real signed carrier callbacks
in, each call's timeline of callbacks, events and deliveries out, for its customer alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.harness import auth, provision_key
from tests.integration.test_carrier_ingest import TELNYX_ANSWERED, TELNYX_OUT, Rig, rig, twilio
from webhookd.models import Carrier, Scope

pytestmark = pytest.mark.anyio

SID = "CA5ca1ab1e000000000000000000000001"
TWILIO_CALL = f"twilio:{SID}"
TELNYX_CALL = "telnyx:v3:FIXTURE0001xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
LIFECYCLE = ("01_initiated.form", "02_ringing.form", "03_in-progress.form", "04_completed.form")


async def get(r: Rig, path: str, key: str | None = None) -> tuple[int, Any]:
    async with r.http.get(r.base + path, headers=auth(key or r.key)) as response:
        return response.status, await response.json()


async def a_call_with_a_late_and_a_repeated_callback(r: Rig) -> list[str]:
    """Twilio's whole lifecycle, the ringing callback again (the same one: dropped), and a ringing
    callback of a later sequence number (recorded, but the call is past it). Returns the event ids."""
    ids = []
    for name in LIFECYCLE:
        status, answer = await r.post(Carrier.TWILIO, twilio(name))
        assert status == 200, answer
        ids += answer["events"]
    _, repeated = await r.post(Carrier.TWILIO, twilio("02_ringing.form"))
    _, late = await r.post(Carrier.TWILIO, twilio("02_ringing.form", SequenceNumber="4"))
    assert (repeated["duplicates"], repeated["events"], late["duplicates"], late["events"]) == (1, [], 0, [])
    await r.delivered(ids)
    return ids


async def test_a_calls_timeline_shows_its_callbacks_events_and_deliveries(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        ids = await a_call_with_a_late_and_a_repeated_callback(r)
        status, listed = await get(r, "/api/v1/calls")
        by_colon = await get(r, f"/api/v1/calls/{TWILIO_CALL}")
        by_escape = await get(r, f"/api/v1/calls/{quote(TWILIO_CALL, safe='')}")

    assert status == 200 and listed["next_cursor"] is None
    (call,) = listed["data"]
    assert {k: call[k] for k in ("id", "carrier", "call_id", "state", "callback_count", "event_count")} == {
        "id": TWILIO_CALL,
        "carrier": "twilio",
        "call_id": SID,
        "state": "completed",
        "callback_count": 5,
        "event_count": 4,
    }
    assert by_colon == by_escape and by_colon[0] == 200
    timeline = by_colon[1]
    assert [(c["status_raw"], c["event_id"]) for c in timeline["callbacks"]] == [
        ("initiated", ids[0]),
        ("ringing", ids[1]),
        ("in-progress", ids[2]),
        ("completed", ids[3]),
        ("ringing", None),  # late: recorded, produced no event
    ]
    assert [(e["id"], e["type"]) for e in timeline["events"]] == list(
        zip(ids, ["call.initiating", "call.ringing", "call.in_progress", "call.completed"], strict=True)
    )
    for event in timeline["events"]:
        assert event["payload"]["id"] == event["id"] and event["payload"]["data"]["carrier_call_id"] == SID
        (delivery,) = event["deliveries"]
        assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == ("delivered", 1, 200)
        assert delivery["url"] == r.receiver.url


async def test_a_call_id_with_colons_is_its_carriers_own(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        for body in (TELNYX_OUT, TELNYX_ANSWERED):
            assert (await r.post(Carrier.TELNYX, body))[0] == 200
        status, timeline = await get(r, f"/api/v1/calls/{quote(TELNYX_CALL, safe='')}")
    assert status == 200
    assert (timeline["id"], timeline["call_id"], timeline["state"]) == (
        TELNYX_CALL,
        TELNYX_CALL.removeprefix("telnyx:"),
        "in_progress",
    )
    assert [e["type"] for e in timeline["events"]] == ["call.initiating", "call.in_progress"]


async def test_another_customers_call_is_not_found(tmp_path: Path) -> None:
    globex = await provision_key(tmp_path / "w.db", "globex", {Scope.MANAGE_WEBHOOKS})
    async with rig(tmp_path) as r:
        await r.post(Carrier.TWILIO, twilio("04_completed.form"))
        theirs = await get(r, f"/api/v1/calls/{TWILIO_CALL}", globex)
        listed = await get(r, "/api/v1/calls", globex)
        missing = await get(r, "/api/v1/calls/twilio:CA404")
        mine = await get(r, f"/api/v1/calls/{TWILIO_CALL}")
    assert theirs == missing == (404, {"error": {"code": "not_found", "message": "no such call"}})
    assert listed == (200, {"data": [], "next_cursor": None})
    assert mine[0] == 200


@pytest.mark.parametrize(
    "ref",
    [SID, "skype:live-1", "twilio:", ":CA1", "Twilio:CA1", "twilio:" + "x" * 256, "twilio%3ACA%001"],
)
async def test_a_malformed_call_id_is_a_400_saying_the_form(tmp_path: Path, ref: str) -> None:
    async with rig(tmp_path) as r:
        status, body = await get(r, f"/api/v1/calls/{ref}")
    assert status == 400, body
    assert body["error"]["code"] == "invalid_call_id"
    assert "carrier:call_id, such as twilio:CA0123" in body["error"]["message"]


async def test_calls_page_by_cursor_and_by_page_and_the_cursor_wins(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        sids = [f"CA5ca1ab1e0000000000000000000001{n:02d}" for n in range(5)]
        for sid in sids:
            assert (await r.post(Carrier.TWILIO, twilio("01_initiated.form", CallSid=sid)))[0] == 200
        newest_first = [f"twilio:{sid}" for sid in reversed(sids)]

        seen, path = [], "/api/v1/calls?limit=2"
        while path:
            status, page = await get(r, path)
            assert status == 200, page
            seen += [c["id"] for c in page["data"]]
            path = page["next_cursor"] and f"/api/v1/calls?limit=2&cursor={quote(page['next_cursor'])}"
        by_page = [
            c["id"] for n in range(3) for c in (await get(r, f"/api/v1/calls?limit=2&page={n}"))[1]["data"]
        ]
        _, first = await get(r, "/api/v1/calls?limit=2")
        _, both = await get(r, f"/api/v1/calls?limit=2&page=2&cursor={quote(first['next_cursor'])}")
        bad = await get(r, "/api/v1/calls?cursor=evt_01")

    assert seen == newest_first and by_page == newest_first
    assert [c["id"] for c in both["data"]] == newest_first[2:4]
    assert bad[0] == 400 and bad[1]["error"]["code"] == "invalid_cursor"
