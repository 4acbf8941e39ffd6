"""Properties of the decider over generated histories (hypothesis).

A driver plays the shell: for each pending effect it draws an outcome (answers with or without tool
calls, plans good and bad, transient and permanent failures, policy verdicts, approvals, budget
verdicts), sometimes delivers an old command again, sometimes cancels. Whatever happens: the fold of
the history equals the live state, the chain is unbroken, every run ends or waits, and the decider
never emits an event that ``evolve`` rejects (``when`` evolves each one).
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.task.commands import (
    AuthorizeTool,
    CallModel,
    CancelTask,
    Command,
    DecideApproval,
    RecordBudgetVerdict,
    RecordModelFailure,
    RecordModelResponse,
    RecordPolicyDecision,
    RecordToolResult,
    ReserveBudget,
    RunTool,
    StartTask,
    ToolCall,
)
from processors.task.decider import fold, pending_effects
from processors.task.state import TERMINAL, TaskState
from tests.unit.processors.helpers import T0, submitted, when

QUERIES = ["What is 6 * 7?", "What is 12 * 7? What is 100 / 4? Then summarise both results.", "hello"]


def _answer(draw: st.DrawFn, effect: CallModel) -> Command:
    request = effect.request
    choice = draw(st.sampled_from(["answer", "tools", "fail", "transient", "plan", "bad-plan"]))
    if choice in ("fail", "transient"):
        return RecordModelFailure(
            idempotency_key=request.idempotency_key,
            error_type="E",
            error="x",
            latency_ms=1,
            retryable=choice == "transient",
            retry_at=T0 + timedelta(seconds=1) if choice == "transient" else None,
        )
    content: str | None = draw(st.text(max_size=20))
    calls: tuple[ToolCall, ...] = ()
    if choice == "tools":
        n = draw(st.integers(min_value=1, max_value=3))
        prefix = f"{request.agent_id}s{request.step}"
        calls = tuple(ToolCall(id=f"{prefix}c{i}", name="calculator", arguments_json="{}") for i in range(n))
        content = None
    elif choice == "plan":
        size = draw(st.integers(min_value=1, max_value=4))
        nodes = [
            {
                "id": f"n{i}",
                "description": f"part {i}",
                "agent": "w",
                "depends_on": [f"n{j}" for j in range(i) if draw(st.booleans())],
            }
            for i in range(size)
        ]
        content = json.dumps({"subtasks": nodes})
    elif choice == "bad-plan":
        content = "not json"
    return RecordModelResponse(
        idempotency_key=request.idempotency_key,
        model="m",
        content=content,
        tool_calls=calls,
        finish_reason="stop",
        prompt_tokens=draw(st.integers(0, 1000)),
        completion_tokens=draw(st.integers(0, 1000)),
        cost_usd=draw(st.floats(0, 1)),
        latency_ms=1.0,
        response_json="{}",
    )


@st.composite
def runs(draw: st.DrawFn) -> tuple[TaskState, TaskState, list]:
    """Drive one task with drawn choices; returns (live state, folded state, history)."""
    state, history = submitted(draw(st.sampled_from(QUERIES)))
    start = StartTask(
        provider="p",
        model="m",
        offline=True,
        max_steps=draw(st.integers(min_value=1, max_value=4)),
        tools=("calculator",),
        max_attempts=draw(st.integers(min_value=1, max_value=3)),
        max_parallel=draw(st.integers(min_value=1, max_value=3)),
        org_budget_usd=draw(st.sampled_from([None, 5.0])),
    )
    state, _ = when(state, start, history)
    delivered: list[Command] = []
    for _ in range(60):
        effects = pending_effects(state)
        waiting = state.waiting_for_approval
        if not effects and not waiting:
            break
        roll = draw(st.integers(0, 19))
        if roll == 0:
            state, _ = when(state, CancelTask(reason="drawn", cancelled_by="hypothesis"), history)
            continue
        if delivered and roll == 1:
            # At-least-once: a command delivered again must change nothing.
            before = state
            state, payloads = when(state, draw(st.sampled_from(delivered)), history)
            assert payloads == [] and state == before
            continue
        command: Command
        if waiting and (not effects or draw(st.booleans())):
            command = DecideApproval(
                approval_id=draw(st.sampled_from(waiting)),
                approved=draw(st.booleans()),
                decided_by="u",
                reason="r",
            )
        else:
            effect = draw(st.sampled_from(effects))
            match effect:
                case CallModel():
                    command = _answer(draw, effect)
                case ReserveBudget():
                    exceeded = draw(st.integers(0, 9)) == 0
                    command = RecordBudgetVerdict(
                        idempotency_key=effect.request.idempotency_key,
                        scope_id="org-1/2026-01-01",
                        tokens=effect.estimated_tokens,
                        cost_usd=0.01,
                        used_tokens=0,
                        used_usd=4.0,
                        limit_usd=effect.limit_usd,
                        exceeded=exceeded,
                        threshold_crossed=0.8 if draw(st.booleans()) else None,
                    )
                case AuthorizeTool():
                    command = RecordPolicyDecision(
                        idempotency_key=effect.request.idempotency_key,
                        effect=draw(st.sampled_from(["allow", "deny", "require_approval"])),
                        rule="r",
                    )
                case RunTool():
                    failed = draw(st.booleans())
                    command = RecordToolResult(
                        idempotency_key=effect.request.idempotency_key,
                        output="" if failed else draw(st.text(max_size=10)),
                        error_type="E" if failed else None,
                        error="boom" if failed else None,
                        latency_ms=0.5,
                        retryable=failed and draw(st.booleans()),
                        retry_at=T0 + timedelta(seconds=1),
                    )
        state, _ = when(state, command, history)
        delivered.append(command)
    return state, fold(history), history


@settings(max_examples=300, deadline=None)
@given(runs())
def test_fold_of_history_equals_live_state(run: tuple[TaskState, TaskState, list]) -> None:
    live, folded, history = run
    assert folded == live
    assert [e.sequence for e in history] == list(range(len(history)))
    for previous, event in itertools.pairwise(history):
        assert event.envelope.prev_hash == previous.digest


@settings(max_examples=300, deadline=None)
@given(runs())
def test_every_run_ends_or_waits(run: tuple[TaskState, TaskState, list]) -> None:
    live, _, history = run
    # Bounded by max_steps and max_attempts: a run the driver stopped driving is terminal, or waits
    # on an effect or a human decision, never stuck with nothing to wait for.
    assert live.status in TERMINAL or pending_effects(live) or live.waiting_for_approval
    terminal = [e for e in history if e.event_type in ("TaskCompleted", "TaskFailed", "TaskCancelled")]
    assert len(terminal) <= 1
    if terminal:
        assert terminal[0] is history[-1]
    if live.status in TERMINAL:
        assert pending_effects(live) == []
