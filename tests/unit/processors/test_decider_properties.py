"""Properties of the decider over generated histories (hypothesis)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.task.decider import (
    Command,
    RecordModelFailure,
    RecordModelResponse,
    RecordToolResult,
    StartTask,
    TaskState,
    ToolCall,
    fold,
    pending_effects,
)
from schemas.events import LlmCallRequested
from tests.unit.processors.helpers import submitted, when


@st.composite
def runs(draw: st.DrawFn) -> tuple[TaskState, TaskState, list]:
    """Drive one task with drawn choices; returns (live state, folded state, history)."""
    state, history = submitted(draw(st.text(min_size=1, max_size=30)))
    max_steps = draw(st.integers(min_value=1, max_value=4))
    state, _ = when(state, StartTask(provider="p", model="m", offline=True, max_steps=max_steps), history)
    replayed_commands: list[Command] = []
    for _ in range(40):
        effects = pending_effects(state)
        if not effects:
            break
        if replayed_commands and draw(st.booleans()):
            # At-least-once: a command delivered again must change nothing.
            before = state
            state, payloads = when(state, draw(st.sampled_from(replayed_commands)), history)
            assert payloads == [] and state == before
            continue
        effect = draw(st.sampled_from(effects))
        command: Command
        if isinstance(effect, LlmCallRequested):
            choice = draw(st.sampled_from(["answer", "tools", "fail"]))
            if choice == "fail":
                command = RecordModelFailure(
                    idempotency_key=effect.idempotency_key, error_type="E", error="x", latency_ms=1
                )
            else:
                n = 0 if choice == "answer" else draw(st.integers(min_value=1, max_value=3))
                command = RecordModelResponse(
                    idempotency_key=effect.idempotency_key,
                    model="m",
                    content=draw(st.text(max_size=20)) if n == 0 else None,
                    tool_calls=tuple(
                        ToolCall(id=f"s{effect.step}c{i}", name="calculator", arguments_json="{}")
                        for i in range(n)
                    ),
                    finish_reason="stop",
                    prompt_tokens=draw(st.integers(0, 1000)),
                    completion_tokens=draw(st.integers(0, 1000)),
                    latency_ms=1.0,
                    response_json="{}",
                )
        else:
            failed = draw(st.booleans())
            command = RecordToolResult(
                idempotency_key=effect.idempotency_key,
                output="" if failed else draw(st.text(max_size=10)),
                error_type="E" if failed else None,
                error="boom" if failed else None,
                latency_ms=0.5,
            )
        state, _ = when(state, command, history)
        replayed_commands.append(command)
    return state, fold(history), history


@settings(max_examples=150, deadline=None)
@given(runs())
def test_fold_of_history_equals_live_state(run: tuple[TaskState, TaskState, list]) -> None:
    live, folded, history = run
    assert folded == live
    assert [e.sequence for e in history] == list(range(len(history)))
    for previous, event in itertools.pairwise(history):
        assert event.envelope.prev_hash == previous.digest


@settings(max_examples=150, deadline=None)
@given(runs())
def test_every_run_ends_or_waits_on_an_effect(run: tuple[TaskState, TaskState, list]) -> None:
    live, _, history = run
    # Bounded by max_steps: a run the driver finished is terminal, never stuck without an effect.
    assert live.status.value in ("completed", "failed") or pending_effects(live)
    terminal = [e for e in history if e.event_type in ("TaskCompleted", "TaskFailed")]
    assert len(terminal) <= 1
    if terminal:
        assert terminal[0] is history[-1]
