"""Time travel, diffs, timelines and the subtask DAG over histories built with the pure decider."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from audit.timetravel import (
    PositionError,
    StateChange,
    diff_states,
    sequence_at_time,
    state_at,
    state_at_time,
    subtask_tree,
    timeline,
)
from processors.task.commands import RecordModelFailure, RecordModelResponse, StartTask, ToolCall
from processors.task.decider import evolve
from processors.task.state import AgentState, Status, TaskState
from schemas.events import Event
from tests.unit.processors.helpers import T0, submitted, when

START = StartTask(provider="offline", model="m", offline=True, max_steps=3, tools=("calculator",))
THREE_PARTS = "What is 12 * 7? What is 100 / 4? Then summarise both results."
PLAN = json.dumps(
    {
        "subtasks": [
            {"id": "s1", "description": "What is 12 * 7?", "agent": "worker", "depends_on": []},
            {"id": "s2", "description": "What is 100 / 4?", "agent": "worker", "depends_on": []},
            {"id": "s3", "description": "Summarise", "agent": "worker", "depends_on": ["s1", "s2"]},
        ]
    }
)


def model_says(agent: AgentState, content: str | None = None, *calls: ToolCall) -> RecordModelResponse:
    assert agent.pending_llm is not None
    return RecordModelResponse(
        idempotency_key=agent.pending_llm.idempotency_key,
        model="m",
        content=content,
        tool_calls=calls,
        finish_reason="tool_calls" if calls else "stop",
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=0.001,
        latency_ms=12.5,
        response_json="{}",
    )


def planned_task() -> tuple[list[Event], list[TaskState]]:
    """A standard task run to completion (plan, three subtasks, merge), and the live state after
    each decision, as the processor holds it (and checkpoints it)."""
    state, history = submitted(THREE_PARTS)
    live = [state]
    state, _ = when(state, START, history)
    live.append(state)
    for agent in ("main", "s2", "s1", "s3", "main"):
        content = {"main": PLAN if len(live) == 2 else "84 and 25", "s1": "84", "s2": "25"}.get(agent, "both")
        state, _ = when(state, model_says(state.agents[agent], content), history)
        live.append(state)
    assert state.status is Status.COMPLETED
    return history, live


def test_the_state_after_each_decision_equals_the_live_state() -> None:
    history, live = planned_task()
    for state in live:
        assert state_at(history, state.sequence) == state


def test_the_state_after_every_event_is_the_previous_one_evolved() -> None:
    history, _ = planned_task()
    previous = TaskState()
    for event in history:
        current = state_at(history, event.sequence)
        assert current == evolve(previous, event) and current.sequence == event.sequence
        previous = current


@pytest.mark.parametrize("n", [-1, 10_000])
def test_a_sequence_outside_the_history_is_refused(n: int) -> None:
    history, _ = planned_task()
    with pytest.raises(PositionError, match=rf"no event {n} in task task-1: its events are 0\.\.\d+"):
        state_at(history, n)


def test_no_history_no_state() -> None:
    with pytest.raises(PositionError, match="no events"):
        state_at([], 0)


def test_state_at_a_time_is_the_prefix_that_had_happened() -> None:
    history, live = planned_task()
    # The helper stamps each decision at T0 + (events before it) seconds.
    accepted_at = history[1].envelope.occurred_at
    assert accepted_at > T0
    assert sequence_at_time(history, T0) == 0
    assert state_at_time(history, accepted_at - timedelta(microseconds=1)) == live[0]
    assert state_at_time(history, accepted_at) == live[1]
    assert state_at_time(history, history[-1].envelope.occurred_at + timedelta(days=1)) == live[-1]


def test_a_time_before_the_task_or_without_zone_is_refused() -> None:
    history, _ = planned_task()
    with pytest.raises(PositionError, match="before task task-1 began"):
        state_at_time(history, T0 - timedelta(seconds=1))
    with pytest.raises(PositionError, match="no time zone"):
        state_at_time(history, T0.replace(tzinfo=None))


def test_diff_shows_what_the_plan_changed() -> None:
    history, _ = planned_task()
    plan_at = next(e.sequence for e in history if e.event_type == "PlanDecided")
    changes = diff_states(state_at(history, plan_at - 1), state_at(history, plan_at))
    by_path = {c.path: c for c in changes}
    assert by_path["/sequence"] == StateChange(
        op="replace", path="/sequence", before=plan_at - 1, after=plan_at
    )
    assert by_path["/plan/0"].op == "add" and by_path["/plan/0"].after["subtask_id"] == "s1"
    assert [c.path for c in changes if c.path.startswith("/plan/")] == ["/plan/0", "/plan/1", "/plan/2"]
    assert diff_states(state_at(history, plan_at), state_at(history, plan_at)) == []


def test_diff_walks_nested_values_and_escapes_pointers() -> None:
    before = TaskState(agents={"a/b": AgentState(agent_id="a/b", messages=("x",))})
    after = before.model_copy(
        update={
            "agents": {"a/b": AgentState(agent_id="a/b", step=1), "c~d": AgentState(agent_id="c~d")},
            "status": Status.RUNNING,
        }
    )
    changes = diff_states(before, after)
    assert changes[0] == StateChange(op="replace", path="/status", before="new", after="running")
    assert StateChange(op="replace", path="/agents/a~1b/step", before=0, after=1) in changes
    assert StateChange(op="remove", path="/agents/a~1b/messages/0", before="x") in changes
    added = next(c for c in changes if c.path == "/agents/c~0d")
    assert added.op == "add" and added.before is None and added.after["agent_id"] == "c~d"


def test_the_timeline_has_a_row_per_event_with_agent_cost_and_durations() -> None:
    history, _ = planned_task()
    rows = timeline(history)
    assert [r.sequence for r in rows] == list(range(len(history)))
    assert rows[0].since_previous_ms is None and rows[0].detail == THREE_PARTS
    assert rows[1].since_previous_ms == 1000.0  # the helper's clock: one second per event before
    completed = [r for r in rows if r.event_type == "LlmCallCompleted"]
    assert [r.agent for r in completed] == ["main", "s2", "s1", "s3", "main"]
    assert all(r.tokens == 15 and r.cost_usd == 0.001 and r.latency_ms == 12.5 for r in completed)
    assert all(r.model == "m" for r in completed)
    requested = next(r for r in rows if r.event_type == "LlmCallRequested")
    assert requested.cost_usd is None and requested.step == 1
    end = rows[-1]
    assert end.event_type == "TaskCompleted" and end.tokens == 75 and end.cost_usd == pytest.approx(0.005)
    assert rows[5].prev_hash == rows[4].digest


def test_the_subtask_tree_follows_the_plan_and_the_events() -> None:
    history, _ = planned_task()
    started = next(e.sequence for e in history if e.event_type == "SubtaskCompleted")
    midway = subtask_tree(history[: started + 1])
    assert midway.mode == "standard" and midway.max_parallel == 3 and midway.task_status == "running"
    status = {n.subtask_id: n.status for n in midway.subtasks}
    assert status == {"s1": "running", "s2": "completed", "s3": "pending"}

    tree = subtask_tree(history)
    assert [n.subtask_id for n in tree.roots] == ["s1", "s2"]
    nodes = {n.subtask_id: n for n in tree.subtasks}
    assert nodes["s1"].dependants == ["s3"] and nodes["s3"].depends_on == ["s1", "s2"]
    assert all(n.status == "completed" for n in tree.subtasks) and nodes["s1"].result == "84"
    assert tree.task_status == "completed" and tree.plan_sequence is not None


def test_subtasks_the_task_did_not_finish_are_abandoned() -> None:
    state, history = submitted(THREE_PARTS)
    state, _ = when(state, START, history)
    state, _ = when(state, model_says(state.main, PLAN), history)
    request = state.agents["s1"].pending_llm
    assert request is not None
    failure = RecordModelFailure(
        idempotency_key=request.idempotency_key, error_type="BadRequestError", error="x", latency_ms=1
    )
    state, _ = when(state, failure, history)
    nodes = {n.subtask_id: n for n in subtask_tree(history).subtasks}
    assert nodes["s1"].status == "failed" and nodes["s1"].error
    assert nodes["s2"].status == "abandoned" and nodes["s3"].status == "abandoned"


def test_a_simple_task_has_no_subtasks() -> None:
    state, history = submitted()
    state, _ = when(state, START, history)
    tree = subtask_tree(history)
    assert tree.mode == "simple" and tree.subtasks == [] and tree.plan_sequence is None
