"""Reconciling a checkpoint with the log: the log decides where the task is."""

from __future__ import annotations

from datetime import datetime, timedelta

from processors.task.commands import RecordModelResponse, StartTask
from processors.task.decider import fold
from processors.task.recovery import reconcile
from processors.task.state import TaskState
from schemas.events import Event
from tests.unit.processors.helpers import T0, submitted, when

START = StartTask(provider="p", model="m", offline=True, max_steps=3)


def _history() -> tuple[list[TaskState], list[Event]]:
    """The states after each decision of a short task, and its events."""
    state, history = submitted()
    states = [state]
    state, _ = when(state, START, history)
    states.append(state)
    assert state.main.pending_llm is not None
    answer = RecordModelResponse(
        idempotency_key=state.main.pending_llm.idempotency_key,
        model="m",
        content="42",
        finish_reason="stop",
        prompt_tokens=1,
        completion_tokens=1,
        latency_ms=1,
        response_json="{}",
    )
    state, _ = when(state, answer, history)
    states.append(state)
    return states, history


def _reader(history: list[Event], calls: list[datetime | None]):  # type: ignore[no-untyped-def]
    async def read(since: datetime | None) -> list[Event]:
        calls.append(since)
        return list(history) if since is None else [e for e in history if e.envelope.occurred_at >= since]

    return read


async def test_events_after_the_checkpoint_are_folded_in() -> None:
    states, history = _history()
    calls: list[datetime | None] = []
    recovered = await reconcile(states[1], T0, _reader(history, calls))
    assert recovered == states[-1] == fold(history)
    assert calls == [T0 - timedelta(seconds=30)]  # the recent part of the log was enough


async def test_a_checkpoint_ahead_of_its_events_yields_to_the_log() -> None:
    states, history = _history()
    # The last batch's checkpoint landed, its events did not.
    landed = history[:3]
    calls: list[datetime | None] = []
    recovered = await reconcile(states[-1], T0, _reader(landed, calls))
    assert recovered == fold(landed) == states[1]
    assert calls[-1] is None  # the whole history decided


async def test_a_checkpoint_that_disagrees_with_the_log_yields_to_the_log() -> None:
    states, history = _history()
    forged = states[1].model_copy(update={"last_digest": "0" * 64})
    recovered = await reconcile(forged, T0, _reader(history, []))
    assert recovered == fold(history)
