"""A recorded source task and its forks, built through the real decider and stamping."""

from __future__ import annotations

from audit.fork import copy_prefix
from processors.task.commands import (
    ForkTask,
    RecordModelResponse,
    RecordPolicyDecision,
    RecordToolResult,
    StartTask,
    ToolCall,
)
from processors.task.decider import fold
from processors.task.state import TaskState
from schemas.events import Event, Payload
from tests.unit.processors.helpers import submitted, when

START = StartTask(provider="offline", model="m", offline=True, max_steps=5, tools=("calculator",))
CALC = ToolCall(id="c1", name="calculator", arguments_json='{"expression": "6 * 7"}')
FORK_ID = "fork-1"


def answer(
    state: TaskState, content: str | None = None, *calls: ToolCall, model: str = "m"
) -> RecordModelResponse:
    request = state.main.pending_llm
    assert request is not None
    return RecordModelResponse(
        idempotency_key=request.idempotency_key,
        model=model,
        content=content,
        tool_calls=calls,
        finish_reason="tool_calls" if calls else "stop",
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=0.001,
        latency_ms=1.0,
        response_json="{}",
    )


def source() -> list[Event]:
    """0 TaskSubmitted, 1 TaskAccepted, 2 LlmCallRequested, 3 LlmCallCompleted, 4 ToolCallRequested,
    5 ToolCallAuthorized, 6 ToolCallCompleted, 7 LlmCallRequested, 8 LlmCallCompleted, 9 TaskCompleted."""
    state, history = submitted(task_id="source-1")
    state, _ = when(state, START, history)
    state, _ = when(state, answer(state, None, CALC), history)
    key = state.main.tools[0].request.idempotency_key
    state, _ = when(state, RecordPolicyDecision(idempotency_key=key, effect="allow", rule="test"), history)
    state, _ = when(state, RecordToolResult(idempotency_key=key, output="42", latency_ms=1.0), history)
    state, _ = when(state, answer(state, "The answer is 42."), history)
    return history


def forked(
    at: int, *, model: str | None = None, input: str | None = None, overrides: dict[str, str] | None = None
) -> tuple[TaskState, list[Event], list[Payload]]:
    """The fork of :func:`source` at ``at``: its state and history after ``ForkTask``, and what it decided."""
    original = source()
    history = [event for event, _ in copy_prefix(original, at, task_id=FORK_ID)]
    state = fold(history)
    command = ForkTask(
        source_task_id="source-1",
        prefix_events=at,
        source_last_event_id=str(original[at - 1].envelope.event_id),
        forked_by="operator-1",
        model=model,
        input=input,
        overrides=overrides or {},
    )
    state, payloads = when(state, command, history)
    return state, history, payloads
