"""The task read model is the same whatever order a task's events arrive in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.task.decider import (
    RecordModelResponse,
    RecordPolicyDecision,
    RecordToolResult,
    StartTask,
    ToolCall,
)
from projections.task_view import apply, new_view
from schemas.events import Event
from tests.unit.processors.helpers import submitted, when


def completed_history() -> list[Event]:
    state, history = submitted("What is 6 * 7?")
    state, _ = when(state, StartTask(provider="p", model="m", offline=True, max_steps=3), history)
    assert state.main.pending_llm is not None
    call = ToolCall(id="c1", name="calculator", arguments_json="{}")
    state, payloads = when(
        state,
        RecordModelResponse(
            idempotency_key=state.main.pending_llm.idempotency_key,
            model="m",
            content=None,
            tool_calls=(call,),
            finish_reason="tool_calls",
            prompt_tokens=3,
            completion_tokens=2,
            latency_ms=1,
            response_json="{}",
        ),
        history,
    )
    key = payloads[1].idempotency_key  # type: ignore[attr-defined]
    state, _ = when(state, RecordPolicyDecision(idempotency_key=key, effect="allow", rule="r"), history)
    state, _ = when(
        state,
        RecordToolResult(
            idempotency_key=key,
            output="42",  # type: ignore[attr-defined]
            latency_ms=0,
        ),
        history,
    )
    assert state.main.pending_llm is not None
    when(
        state,
        RecordModelResponse(
            idempotency_key=state.main.pending_llm.idempotency_key,
            model="m",
            content="42",
            finish_reason="stop",
            prompt_tokens=5,
            completion_tokens=1,
            latency_ms=1,
            response_json="{}",
        ),
        history,
    )
    return history


HISTORY = completed_history()


def project(events: list[Event]):  # type: ignore[no-untyped-def]
    view = new_view(events[0])
    for event in events:
        view = apply(view, event)
    return view


def test_in_order_projection() -> None:
    view = project(HISTORY)
    assert view.status == "completed"
    assert view.query == "What is 6 * 7?"
    assert (view.llm_calls, view.tool_calls, view.steps) == (2, 1, 2)
    assert (view.prompt_tokens, view.completion_tokens, view.total_tokens) == (8, 3, 11)
    assert view.result == "42"
    assert view.last_sequence == len(HISTORY) - 1 == view.event_count - 1
    assert (
        view.duration_ms
        == (HISTORY[-1].envelope.occurred_at - HISTORY[0].envelope.occurred_at).total_seconds() * 1000
    )


@settings(max_examples=100)
@given(st.permutations(HISTORY))
def test_projection_is_order_insensitive(shuffled: list[Event]) -> None:
    assert project(list(shuffled)) == project(HISTORY)
