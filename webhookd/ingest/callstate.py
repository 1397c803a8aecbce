"""The call state machine: only forward moves are emitted, one terminal per call.

Pure: ``advance(state, update)`` returns the new state and the update to emit, if any. The store
runs it inside the transaction that records the callback, so concurrent callbacks of one call
cannot both move it forward.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from webhookd.ingest.normalize import NormalizedCall
from webhookd.models import isoformat

RANKS = {
    "call.initiating": 0,
    "call.ringing": 1,
    "call.in_progress": 2,
    "call.completed": 3,
    "call.failed": 3,
    "call.no_answer": 3,
}
TERMINAL_RANK = 3
TRANSCRIPT = "call.transcript.ready"
_PROGRESS = ("initiating", "ringing", "in_progress")
CALL_STATUSES = ("new", *_PROGRESS, "completed", "failed", "no_answer")
"""A call's status as the API and the dashboard name it: ``new`` until a callback moves it, then the
last ``call.*`` progress it emitted, or its end."""


@dataclass(frozen=True, slots=True)
class CallState:
    """What is known of one call so far (per customer, carrier and carrier call id)."""

    rank: int = -1
    """-1 nothing emitted; then initiating 0 < ringing 1 < in_progress 2 < terminal 3."""
    direction: str | None = None
    answered_at: str | None = None
    answered_by: str | None = None
    answered_by_raw: str | None = None
    sequence: int | None = None
    """The highest SequenceNumber emitted (Twilio, TeXML): a lower one arrived late."""
    terminal: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def status(self) -> str:
        """One of :data:`CALL_STATUSES`."""
        if self.terminal is not None:
            return self.terminal.removeprefix("call.")
        return _PROGRESS[self.rank] if 0 <= self.rank < TERMINAL_RANK else "new"

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> CallState:
        if not raw:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def _learn(state: CallState, update: NormalizedCall) -> CallState:
    """Facts any callback teaches, even a late one: direction, answering and AMD results."""
    answered_at = state.answered_at
    if update.type == "call.in_progress" or update.answered_at is not None:
        moment = update.answered_at or update.occurred_at
        answered_at = answered_at or (None if moment is None else isoformat(moment))
    return dataclasses.replace(
        state,
        direction=state.direction or update.direction,
        answered_at=answered_at,
        answered_by=update.answered_by or state.answered_by,
        answered_by_raw=update.answered_by_raw or state.answered_by_raw,
    )


def _fill(update: NormalizedCall, state: CallState) -> NormalizedCall:
    """Fields a callback lacks but the call state knows (Telnyx hangups carry no direction or
    duration; AMD results arrive on their own and belong on later events)."""
    answered_at = update.answered_at or _parse(state.answered_at)
    duration = update.duration_seconds
    if duration is None and update.type == "call.completed" and answered_at and update.ended_at:
        duration = max(0, round((update.ended_at - answered_at).total_seconds()))
    return dataclasses.replace(
        update,
        direction=update.direction or state.direction,
        answered_by=update.answered_by or state.answered_by,
        answered_by_raw=update.answered_by_raw or state.answered_by_raw,
        answered_at=answered_at
        if update.type in {"call.in_progress", "call.completed"}
        else update.answered_at,
        duration_seconds=duration,
    )


def _cancel_by_direction(update: NormalizedCall, direction: str | None) -> NormalizedCall:
    """A cancel is ours to abort when outbound (``call.failed``, canceled) and the
    caller giving up when inbound (``call.no_answer``, caller_abandoned). A hangup that carried no
    direction of its own (Telnyx) is decided again once the call's direction is known."""
    if update.reason == "caller_abandoned" and direction == "outbound":
        return dataclasses.replace(update, type="call.failed", reason="canceled")
    if update.reason == "canceled" and direction == "inbound":
        return dataclasses.replace(update, type="call.no_answer", reason="caller_abandoned")
    return update


def _answered_wins(update: NormalizedCall, state: CallState) -> NormalizedCall:
    """Once a call was answered, its end is ``call.completed``, with the raw cause as reason."""
    if update.type == "call.completed" or state.answered_at is None:
        return update
    return dataclasses.replace(
        update, type="call.completed", reason=update.carrier_cause or update.status_raw or update.reason
    )


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def advance(state: CallState, update: NormalizedCall) -> tuple[CallState, NormalizedCall | None]:
    """The call's new state, and ``update`` (filled in from the state) if it moves the call on."""
    state = _learn(state, update)
    if update.type is None:
        return state, None  # state only: AMD results, bridging
    if update.type == TRANSCRIPT:
        return state, _fill(update, state)
    rank = RANKS.get(update.type)
    late = update.sequence is not None and state.sequence is not None and update.sequence < state.sequence
    if rank is None or rank <= state.rank or late:
        return state, None  # late, repeated or past the end: recorded, not delivered
    if rank == TERMINAL_RANK:
        update = _answered_wins(_cancel_by_direction(update, update.direction or state.direction), state)
    emitted = _fill(update, state)
    sequence = update.sequence if update.sequence is not None else state.sequence
    moved = dataclasses.replace(
        state, rank=rank, sequence=sequence, terminal=emitted.type if rank == TERMINAL_RANK else None
    )
    return moved, emitted
