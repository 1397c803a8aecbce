"""The call state machine: forward moves only, exactly one terminal, answered wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from webhookd.ingest.callstate import CALL_STATUSES, RANKS, CallState, advance
from webhookd.ingest.normalize import NormalizedCall

T0 = datetime(2026, 3, 4, 15, 20, tzinfo=UTC)
TERMINALS = ("call.completed", "call.failed", "call.no_answer")


def update(event_type: str | None, status: str, second: int = 0, **fields: object) -> NormalizedCall:
    base: dict[str, object] = {
        "type": event_type,
        "idempotency_key": f"k:{status}:{second}",
        "carrier": "twilio",
        "carrier_call_id": "CA1",
        "status_raw": status,
        "occurred_at": T0 + timedelta(seconds=second),
    }
    return NormalizedCall(**{**base, **fields})  # type: ignore[arg-type]


def run(updates: list[NormalizedCall]) -> list[NormalizedCall]:
    state, emitted = CallState(), []
    for one in updates:
        state, out = advance(CallState.from_json(state.to_json()), one)  # as stored: through JSON
        if out is not None:
            emitted.append(out)
    return emitted


LIFECYCLE = [
    update("call.initiating", "initiated", 0, sequence=0, direction="outbound"),
    update("call.ringing", "ringing", 2, sequence=1, direction="outbound"),
    update(
        "call.in_progress",
        "in-progress",
        9,
        sequence=2,
        direction="outbound",
        answered_at=T0 + timedelta(seconds=9),
    ),
    update(
        "call.completed",
        "completed",
        56,
        sequence=3,
        direction="outbound",
        reason="normal",
        duration_seconds=47,
        ended_at=T0 + timedelta(seconds=56),
    ),
]


def test_a_lifecycle_in_order_emits_each_step() -> None:
    assert [e.type for e in run(LIFECYCLE)] == [
        "call.initiating",
        "call.ringing",
        "call.in_progress",
        "call.completed",
    ]


def test_late_lower_steps_are_recorded_but_not_emitted() -> None:
    order = [LIFECYCLE[2], LIFECYCLE[0], LIFECYCLE[1], LIFECYCLE[3]]
    assert [e.type for e in run(order)] == ["call.in_progress", "call.completed"]


def test_nothing_after_the_terminal_is_emitted() -> None:
    assert [e.type for e in run([LIFECYCLE[3], *LIFECYCLE[:3]])] == ["call.completed"]


def test_a_lower_sequence_number_arrived_late() -> None:
    ringing_late = update("call.ringing", "ringing", 2, sequence=1)
    in_progress = update("call.in_progress", "in-progress", 9, sequence=2)
    assert [e.type for e in run([in_progress, ringing_late])] == ["call.in_progress"]


def test_only_the_first_terminal_is_emitted() -> None:
    busy = update("call.no_answer", "busy", 30, reason="busy")
    failed = update("call.failed", "failed", 31, reason="failed")
    assert [(e.type, e.reason) for e in run([busy, failed])] == [("call.no_answer", "busy")]


def test_once_answered_the_end_is_completed_with_the_raw_cause() -> None:
    answered = update("call.in_progress", "answered", 5)
    hangup = update(
        "call.failed",
        "hangup",
        40,
        reason="unknown",
        carrier_cause="unspecified",
        ended_at=T0 + timedelta(seconds=40),
    )
    out = run([answered, hangup])
    assert [(e.type, e.reason) for e in out] == [
        ("call.in_progress", None),
        ("call.completed", "unspecified"),
    ]
    assert out[1].duration_seconds == 35  # from answer to end, since the callback had none


def test_direction_and_amd_result_are_carried_onto_later_events() -> None:
    initiated = update("call.initiating", "call.initiated", 0, direction="outbound")
    answered = update("call.in_progress", "call.answered", 5)
    amd = update(None, "call.machine.detection.ended", 7, answered_by="machine", answered_by_raw="machine")
    hangup = update("call.completed", "call.hangup", 60, reason="normal", ended_at=T0 + timedelta(seconds=60))
    out = run([initiated, answered, amd, hangup])
    assert [e.type for e in out] == ["call.initiating", "call.in_progress", "call.completed"]
    assert (out[2].direction, out[2].answered_by, out[2].duration_seconds) == ("outbound", "machine", 55)


def test_transcripts_are_emitted_whatever_the_state() -> None:
    transcript = update("call.transcript.ready", "post_call_transcription", 90, transcript={"format": "text"})
    assert [e.type for e in run([LIFECYCLE[3], transcript])] == ["call.completed", "call.transcript.ready"]


# -- property: any order of a call's callbacks ------------------------------------------------

lifecycle_callbacks = st.lists(st.sampled_from([*RANKS, None]), min_size=1, max_size=8).flatmap(
    lambda types: st.permutations([update(t, f"s{i}", i) for i, t in enumerate(types)])
)


@given(lifecycle_callbacks)
def test_any_order_moves_only_forward_with_exactly_one_terminal(callbacks: list[NormalizedCall]) -> None:
    emitted = run(callbacks)
    ranks = [RANKS[e.type] for e in emitted if e.type in RANKS]
    assert ranks == sorted(set(ranks))  # strictly forward, never twice at one stage
    terminals = [e for e in emitted if e.type in TERMINALS]
    assert len(terminals) == (1 if any(c.type in TERMINALS for c in callbacks) else 0)
    assert all(e.type is not None for e in emitted)


def test_a_cancel_without_a_direction_is_decided_by_the_calls_direction() -> None:
    """Telnyx hangups carry no direction: an outbound call's cancel is ours, not an abandon."""
    initiated = update("call.initiating", "call.initiated", 0, direction="outbound")
    hangup = update(
        "call.no_answer", "call.hangup", 20, reason="caller_abandoned", carrier_cause="originator_cancel"
    )
    assert [(e.type, e.reason) for e in run([initiated, hangup])][-1] == ("call.failed", "canceled")
    inbound = update("call.initiating", "call.initiated", 0, direction="inbound")
    ours = update("call.failed", "call.hangup", 20, reason="canceled", carrier_cause="originator_cancel")
    assert [(e.type, e.reason) for e in run([inbound, ours])][-1] == ("call.no_answer", "caller_abandoned")


def test_the_status_names_the_last_step_emitted_or_the_end() -> None:
    state, statuses = CallState(), [CallState().status]
    for one in [*LIFECYCLE, update("call.ringing", "ringing", 60, sequence=1)]:
        state, _ = advance(CallState.from_json(state.to_json()), one)
        statuses.append(state.status)
    assert statuses == ["new", "initiating", "ringing", "in_progress", "completed", "completed"]
    assert set(statuses) <= set(CALL_STATUSES)
    failed, _ = advance(CallState(), update("call.failed", "failed", 1, direction="outbound"))
    assert failed.status == "failed"
