"""The task decider, given events / when command / then events."""

from __future__ import annotations

import hashlib
import json

import pytest

from processors.task.decider import (
    RECORDED_ONLY,
    HistoryError,
    RecordModelFailure,
    RecordModelResponse,
    RecordToolResult,
    StartTask,
    Status,
    TaskState,
    ToolCall,
    conversation_json,
    decide,
    evolve,
    fold,
    idempotency_key,
    pending_effects,
)
from processors.task.history import checkpoint, stamp
from schemas.events import (
    PAYLOAD_TYPES,
    AgentStepStarted,
    ApprovalGranted,
    CheckpointSaved,
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    Payload,
    StepKind,
    TaskAccepted,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskRejected,
    TaskSubmitted,
    ToolCallCompleted,
    ToolCallFailed,
    ToolCallRequested,
)
from tests.unit.processors.helpers import T0, submitted, types, when

START = StartTask(provider="offline", model="m", offline=True, max_steps=3, tools=("calculator",))


def model_says(state: TaskState, content: str | None = None, *calls: ToolCall) -> RecordModelResponse:
    assert state.pending_llm is not None
    return RecordModelResponse(
        idempotency_key=state.pending_llm.idempotency_key,
        model="m",
        content=content,
        tool_calls=calls,
        finish_reason="tool_calls" if calls else "stop",
        prompt_tokens=10,
        completion_tokens=5,
        latency_ms=1.0,
        response_json="{}",
    )


CALC = ToolCall(id="c1", name="calculator", arguments_json='{"expression": "6 * 7"}')


def test_start_accepts_and_asks_the_model() -> None:
    state, history = submitted()
    state, payloads = when(state, START, history)
    assert types(payloads) == ["TaskAccepted", "LlmCallRequested"]
    request = payloads[1]
    assert isinstance(request, LlmCallRequested)
    assert request.idempotency_key == idempotency_key("task-1", 1) == "task-1:step-1"
    assert [m["role"] for m in json.loads(request.messages_json)] == ["system", "user"]
    assert request.prompt_messages == 2
    assert json.loads(conversation_json(state)) == json.loads(request.messages_json)
    assert state.status is Status.RUNNING
    assert pending_effects(state) == [request]


def test_start_twice_is_a_no_op() -> None:
    state, history = submitted()
    state, _ = when(state, START, history)
    assert when(state, START, history)[1] == []


def test_tool_call_then_answer_completes_the_task() -> None:
    state, history = submitted()
    state, _ = when(state, START, history)
    state, payloads = when(state, model_says(state, None, CALC), history)
    assert types(payloads) == ["LlmCallCompleted", "ToolCallRequested"]
    tool_request = payloads[1]
    assert isinstance(tool_request, ToolCallRequested)
    assert tool_request.idempotency_key == "task-1:step-1:tool-c1"
    assert pending_effects(state) == [tool_request]

    state, payloads = when(
        state,
        RecordToolResult(idempotency_key=tool_request.idempotency_key, output="42", latency_ms=0.1),
        history,
    )
    assert types(payloads) == ["ToolCallCompleted", "LlmCallRequested"]
    second = payloads[1]
    assert isinstance(second, LlmCallRequested) and second.step == 2
    # The request adds no message: the answer and the tool result were recorded by their events,
    # and the prompt it stands for is the folded conversation, pinned by count and hash.
    assert json.loads(second.messages_json) == []
    messages = json.loads(conversation_json(state))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[2]["tool_calls"][0]["function"]["name"] == "calculator"
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "42"}
    assert second.prompt_messages == 4
    assert second.prompt_sha256 == hashlib.sha256(conversation_json(state).encode()).hexdigest()

    state, payloads = when(state, model_says(state, "It is 42."), history)
    assert types(payloads) == ["LlmCallCompleted", "TaskCompleted"]
    done = payloads[1]
    assert isinstance(done, TaskCompleted)
    assert (done.result, done.steps, done.llm_calls, done.tool_calls) == ("It is 42.", 2, 2, 1)
    assert (done.prompt_tokens, done.completion_tokens, done.total_tokens) == (20, 10, 30)
    assert state.status is Status.COMPLETED and pending_effects(state) == []
    assert fold(history) == state
    assert [e.sequence for e in history] == list(range(len(history)))


def test_a_late_or_duplicate_model_answer_is_ignored() -> None:
    state, history = submitted()
    state, _ = when(state, START, history)
    answer = model_says(state, "done")
    state, _ = when(state, answer, history)
    assert when(state, answer, history)[1] == []
    stale = answer.model_copy(update={"idempotency_key": "task-1:step-9"})
    assert when(state, stale, history)[1] == []


def test_model_failure_fails_the_task() -> None:
    state, history = submitted()
    state, _ = when(state, START, history)
    assert state.pending_llm is not None
    failure = RecordModelFailure(
        idempotency_key=state.pending_llm.idempotency_key,
        error_type="APITimeoutError",
        error="timed out",
        latency_ms=5,
    )
    state, payloads = when(state, failure, history)
    assert types(payloads) == ["LlmCallFailed", "TaskFailed"]
    assert isinstance(payloads[1], TaskFailed) and payloads[1].reason == "llm_error"
    assert state.status is Status.FAILED


def test_tool_error_is_shown_to_the_model() -> None:
    state, history = submitted()
    state, _ = when(state, START, history)
    state, payloads = when(state, model_says(state, None, CALC), history)
    key = payloads[1].idempotency_key  # type: ignore[attr-defined]
    failure = RecordToolResult(
        idempotency_key=key, error_type="CalculatorError", error="division by zero", latency_ms=0
    )
    state, payloads = when(state, failure, history)
    assert types(payloads) == ["ToolCallFailed", "LlmCallRequested"]
    assert json.loads(conversation_json(state))[-1]["content"] == "error: division by zero"


def test_step_limit_fails_the_task() -> None:
    state, history = submitted()
    state, _ = when(state, START.model_copy(update={"max_steps": 1}), history)
    state, payloads = when(state, model_says(state, None, CALC), history)
    key = payloads[1].idempotency_key  # type: ignore[attr-defined]
    state, payloads = when(state, RecordToolResult(idempotency_key=key, output="42", latency_ms=0), history)
    assert types(payloads) == ["ToolCallCompleted", "TaskFailed"]
    assert isinstance(payloads[1], TaskFailed) and payloads[1].reason == "max_steps"
    assert state.status is Status.FAILED


def test_parallel_tool_calls_wait_for_all_results() -> None:
    state, history = submitted()
    state, _ = when(state, START, history)
    second = CALC.model_copy(update={"id": "c2"})
    state, payloads = when(state, model_says(state, None, CALC, second), history)
    assert types(payloads) == ["LlmCallCompleted", "ToolCallRequested", "ToolCallRequested"]
    first_key, second_key = (p.idempotency_key for p in payloads[1:])  # type: ignore[attr-defined]
    state, payloads = when(
        state, RecordToolResult(idempotency_key=second_key, output="1", latency_ms=0), history
    )
    assert types(payloads) == ["ToolCallCompleted"]
    state, payloads = when(
        state, RecordToolResult(idempotency_key=first_key, output="2", latency_ms=0), history
    )
    assert types(payloads) == ["ToolCallCompleted", "LlmCallRequested"]


def test_evolve_ignores_duplicates_and_rejects_gaps_and_broken_links() -> None:
    state, history = submitted()
    state, _ = when(state, START, history)
    assert evolve(state, history[1]) == state  # already applied: at-least-once delivery
    _, other = submitted()
    with pytest.raises(HistoryError, match="expected sequence"):
        evolve(TaskState(), history[1])
    tampered = history[1].model_copy(
        update={"envelope": history[1].envelope.model_copy(update={"prev_hash": "0" * 64})}
    )
    with pytest.raises(HistoryError, match="prev_hash"):
        evolve(evolve(TaskState(), history[0]), tampered)
    foreign = other[0].model_copy(
        update={"envelope": other[0].envelope.model_copy(update={"task_id": "task-2", "sequence": 2})}
    )
    with pytest.raises(HistoryError, match="belongs to task"):
        evolve(state, foreign)


def _append(state: TaskState, history: list[Event], *payloads: Payload) -> TaskState:
    """Record facts the decider does not emit itself (as another component or a later version would)."""
    for event, _ in stamp(state, payloads, now=T0, producer="test", producer_version="0"):
        history.append(event)
        state = evolve(state, event)
    return state


def test_cancelled_and_rejected_tasks_end_and_ask_for_nothing() -> None:
    for fact, status in (
        (
            TaskCancelled(
                reason="no longer needed",
                cancelled_by="alice",
                abandoned=["task-1:step-1"],
                steps=1,
                llm_calls=0,
                tool_calls=0,
                prompt_tokens=0,
                completion_tokens=0,
                total_tokens=0,
            ),
            Status.CANCELLED,
        ),
        (TaskRejected(reason="budget", error="org budget spent"), Status.REJECTED),
    ):
        state, history = submitted()
        state, _ = when(state, START, history)
        running = state
        assert pending_effects(running)
        state = _append(state, history, fact)
        assert state.status is status and pending_effects(state) == []
        # A late answer to the abandoned call is ignored.
        assert decide(model_says(running, "late"), state) == []
        assert fold(history) == state


def test_recorded_only_facts_keep_the_loop_state() -> None:
    state, history = submitted()
    state, _ = when(state, START, history)
    before = state
    facts: list[Payload] = [
        AgentStepStarted(step=1, kind=StepKind.THINK),
        ApprovalGranted(approval_id="a-1", decided_by="bob", reason="ok"),
    ]
    state = _append(state, history, *facts)
    assert state.sequence == before.sequence + 2
    assert (
        state.model_copy(
            update={
                "sequence": before.sequence,
                "last_event_id": before.last_event_id,
                "last_digest": before.last_digest,
            }
        )
        == before
    )
    assert all(type(fact) in RECORDED_ONLY for fact in facts)


def test_every_task_event_type_has_an_evolve_rule() -> None:
    handled = {name for name, cls in PAYLOAD_TYPES.items() if cls in RECORDED_ONLY}
    acted_on = {
        cls.fullname()
        for cls in (
            TaskSubmitted,
            TaskAccepted,
            LlmCallRequested,
            LlmCallCompleted,
            LlmCallFailed,
            ToolCallRequested,
            ToolCallCompleted,
            ToolCallFailed,
            TaskCompleted,
            TaskFailed,
            TaskCancelled,
            TaskRejected,
        )
    }
    # CheckpointSaved is a snapshot on the task-state topic, never an event of a task's history.
    assert handled | acted_on | {CheckpointSaved.fullname()} == set(PAYLOAD_TYPES)


def test_a_checkpoint_is_not_a_history_event() -> None:
    state, history = submitted()
    with pytest.raises(HistoryError, match="CheckpointSaved"):
        _append(state, history, CheckpointSaved(step=0, status="submitted", state_json="{}"))


def test_checkpoint_record_carries_the_state_and_its_position() -> None:
    state, history = submitted()
    state, _ = when(state, START, history)
    event, body = checkpoint(state, now=T0, producer="test", producer_version="0")
    assert isinstance(event.payload, CheckpointSaved)
    assert TaskState.model_validate_json(event.payload.state_json) == state
    assert event.envelope.sequence == state.sequence == history[-1].sequence
    assert event.envelope.prev_hash == history[-1].digest
    assert event.envelope.causation_id == str(history[-1].envelope.event_id)
    assert event.digest == hashlib.sha256(body).hexdigest()
    again, _ = checkpoint(state, now=T0, producer="test", producer_version="0")
    assert again.envelope.event_id == event.envelope.event_id
