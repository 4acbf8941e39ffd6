"""Time travel over a task's history: its state after any event, what changed between two points,
its timeline and its subtask DAG.

Pure: everything here takes the task's events (as ``streams.history.read_task_events`` returns
them: deduplicated, in sequence order) and reads nothing else. A state is the fold of ``evolve``
over a prefix of the history, exactly what the processor computes live, so the state after event N
equals the processor's checkpoint at sequence N.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from processors.task.decider import fold
from processors.task.state import TaskState
from schemas.events import (
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    BudgetExceeded,
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    PlanDecided,
    SubtaskCompleted,
    SubtaskFailed,
    SubtaskStarted,
    TaskAccepted,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskRejected,
    TaskSubmitted,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallDenied,
    ToolCallFailed,
    ToolCallRequested,
)


class PositionError(ValueError):
    """A point in time or a sequence number that is not in the task's history."""


# -- states --------------------------------------------------------------------------------------


def _check_history(events: Sequence[Event]) -> None:
    if not events:
        raise PositionError("the task has no events")


def last_sequence(events: Sequence[Event]) -> int:
    """The sequence number of the task's last event."""
    _check_history(events)
    return events[-1].sequence


def state_at(events: Sequence[Event], n: int) -> TaskState:
    """The task's state after its event ``n`` (sequence numbers start at 0): the fold of the prefix.

    Raises :class:`PositionError` if ``n`` is negative or past the last event.
    """
    last = last_sequence(events)
    if not 0 <= n <= last:
        raise PositionError(f"no event {n} in task {events[0].task_id}: its events are 0..{last}")
    return fold(event for event in events if event.sequence <= n)


def sequence_at_time(events: Sequence[Event], at: datetime) -> int:
    """The last event of the longest prefix of the history that had happened by ``at``.

    Raises :class:`PositionError` if ``at`` is before the task's first event (or naive).
    """
    _check_history(events)
    if at.tzinfo is None:
        raise PositionError(f"time {at.isoformat()} has no time zone")
    reached = -1
    for event in events:
        if event.envelope.occurred_at > at:
            break
        reached = event.sequence
    if reached < 0:
        first = events[0].envelope.occurred_at.isoformat()
        raise PositionError(
            f"time {at.isoformat()} is before task {events[0].task_id} began (its first event: {first})"
        )
    return reached


def state_at_time(events: Sequence[Event], at: datetime) -> TaskState:
    """The task's state as it was at time ``at`` (after every event that had occurred by then)."""
    return state_at(events, sequence_at_time(events, at))


# -- differences ---------------------------------------------------------------------------------


class StateChange(BaseModel):
    """One difference between two states, JSON-Patch style: ``path`` is a JSON pointer into
    ``TaskState.model_dump(mode="json")``; ``before`` is absent (null) for ``add``, ``after`` for
    ``remove``."""

    model_config = ConfigDict(frozen=True)

    op: Literal["add", "remove", "replace"]
    path: str
    before: Any = None
    after: Any = None


_ABSENT = object()


def _pointer(path: str, key: str | int) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _walk(path: str, before: Any, after: Any, changes: list[StateChange]) -> None:
    if before is _ABSENT:
        changes.append(StateChange(op="add", path=path, after=after))
    elif after is _ABSENT:
        changes.append(StateChange(op="remove", path=path, before=before))
    elif isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(k for k in after if k not in before)]:
            _walk(_pointer(path, key), before.get(key, _ABSENT), after.get(key, _ABSENT), changes)
    elif isinstance(before, list) and isinstance(after, list):
        for index in range(max(len(before), len(after))):
            _walk(
                _pointer(path, index),
                before[index] if index < len(before) else _ABSENT,
                after[index] if index < len(after) else _ABSENT,
                changes,
            )
    elif before != after or type(before) is not type(after):
        changes.append(StateChange(op="replace", path=path, before=before, after=after))


def diff_states(before: TaskState, after: TaskState) -> list[StateChange]:
    """What changed from ``before`` to ``after``, leaf by leaf (lists element by element)."""
    changes: list[StateChange] = []
    _walk("", before.model_dump(mode="json"), after.model_dump(mode="json"), changes)
    return changes


# -- timeline ------------------------------------------------------------------------------------


class TimelineRow(BaseModel):
    """One event of a task's timeline."""

    sequence: int
    event_type: str
    event_id: str
    occurred_at: datetime
    since_previous_ms: float | None = Field(description="Time since the previous event (None for the first).")
    step: int | None = None
    agent: str | None = Field(default=None, description="The agent (main or a subtask id) it concerns.")
    model: str | None = None
    tool: str | None = None
    tokens: int | None = Field(default=None, description="The call's tokens; the task's total at its end.")
    cost_usd: float | None = Field(default=None, description="The call's cost; the task's total at its end.")
    latency_ms: float | None = None
    offline: bool | None = None
    producer: str
    detail: str
    digest: str
    prev_hash: str | None = None


def _detail(event: Event) -> str:
    payload = event.payload
    match payload:
        case TaskSubmitted():
            return payload.query
        case TaskAccepted():
            return f"{payload.execution_mode.value.lower()} (complexity {payload.complexity:.2f})"
        case LlmCallRequested():
            added = len(json.loads(payload.messages_json))
            return f"prompt of {payload.prompt_messages} messages (+{added}), {len(payload.tools)} tools"
        case LlmCallCompleted():
            calls = [c["name"] for c in json.loads(payload.tool_calls_json)]
            cached = f"[cache {payload.cache_kind.value.lower()}] " if payload.cache_kind else ""
            return cached + (f"tool calls {calls}" if calls else (payload.content or ""))
        case ToolCallRequested() | ApprovalRequested():
            return payload.arguments_json
        case ToolCallAuthorized():
            return f"allowed by {payload.rule}"
        case ToolCallDenied():
            return f"denied by {payload.rule}: {payload.reason}"
        case ToolCallCompleted():
            return ("[quarantined] " if payload.quarantined else "") + payload.output
        case ToolCallFailed() | LlmCallFailed():
            return f"{payload.error_type}: {payload.error}"
        case ApprovalGranted() | ApprovalRejected():
            return f"{payload.decided_by}: {payload.reason}"
        case PlanDecided():
            return ", ".join(s.subtask_id for s in payload.subtasks)
        case SubtaskCompleted():
            return payload.result
        case SubtaskFailed():
            return payload.error
        case BudgetExceeded():
            return f"{payload.scope.value} {payload.scope_id}: {payload.action}"
        case TaskCompleted():
            return payload.result
        case TaskFailed() | TaskRejected():
            return f"{payload.reason}: {payload.error}"
        case TaskCancelled():
            return f"cancelled by {payload.cancelled_by}: {payload.reason}"
    return ""


def timeline(events: Sequence[Event]) -> list[TimelineRow]:
    """One row per event: what happened, to which agent, with which model or tool, what it cost and
    how long it took (the call's latency, and the time since the previous event)."""
    rows = []
    previous: datetime | None = None
    for event in events:
        payload = event.payload
        at = event.envelope.occurred_at
        costed = isinstance(payload, LlmCallCompleted | TaskCompleted | TaskFailed | TaskCancelled)
        latency = getattr(payload, "latency_ms", None)
        rows.append(
            TimelineRow(
                sequence=event.sequence,
                event_type=event.event_type,
                event_id=str(event.envelope.event_id),
                occurred_at=at,
                since_previous_ms=round((at - previous).total_seconds() * 1000, 1) if previous else None,
                step=getattr(payload, "step", None),
                agent=getattr(payload, "agent_id", None),
                model=getattr(payload, "model", None),
                tool=getattr(payload, "tool", None),
                tokens=getattr(payload, "total_tokens", None),
                cost_usd=getattr(payload, "cost_usd", None) if costed else None,
                latency_ms=round(latency, 1) if latency is not None else None,
                offline=getattr(payload, "offline", None),
                producer=event.envelope.producer,
                detail=_detail(event),
                digest=event.digest,
                prev_hash=event.envelope.prev_hash,
            )
        )
        previous = at
    return rows


# -- the subtask DAG -----------------------------------------------------------------------------

SubtaskStatus = Literal["pending", "running", "completed", "failed", "abandoned"]


class SubtaskNode(BaseModel):
    """One subtask of the plan, where it stands after the history."""

    subtask_id: str
    description: str
    agent: str
    depends_on: list[str]
    dependants: list[str]
    status: SubtaskStatus
    started_sequence: int | None = None
    ended_sequence: int | None = None
    result: str | None = None
    error: str | None = None


class SubtaskTree(BaseModel):
    """A task's plan as a DAG: its subtasks (in plan order), each with its dependencies, dependants
    and status. No plan (a simple task, or one not planned yet): no subtasks."""

    task_id: str
    mode: str | None = None
    plan_sequence: int | None = Field(default=None, description="The PlanDecided event's sequence.")
    max_parallel: int | None = None
    task_status: str
    subtasks: list[SubtaskNode]

    @property
    def roots(self) -> list[SubtaskNode]:
        return [node for node in self.subtasks if not node.depends_on]


def subtask_tree(events: Sequence[Event]) -> SubtaskTree:
    """The plan's subtasks and their dependencies (from the last ``PlanDecided``), each with its
    status from the ``Subtask*`` events; ``abandoned`` if the task ended before the subtask did."""
    _check_history(events)
    plan: PlanDecided | None = None
    plan_sequence = None
    nodes: dict[str, dict[str, Any]] = {}
    ended = False
    for event in events:
        payload = event.payload
        match payload:
            case PlanDecided():
                plan, plan_sequence = payload, event.sequence
                subtasks = payload.subtasks
                nodes = {
                    s.subtask_id: {
                        "subtask_id": s.subtask_id,
                        "description": s.description,
                        "agent": s.agent,
                        "depends_on": list(s.depends_on),
                        "dependants": [d.subtask_id for d in subtasks if s.subtask_id in d.depends_on],
                        "status": "pending",
                    }
                    for s in payload.subtasks
                }
            case SubtaskStarted() if payload.subtask_id in nodes:
                nodes[payload.subtask_id].update(status="running", started_sequence=event.sequence)
            case SubtaskCompleted() if payload.subtask_id in nodes:
                nodes[payload.subtask_id].update(
                    status="completed", ended_sequence=event.sequence, result=payload.result
                )
            case SubtaskFailed() if payload.subtask_id in nodes:
                nodes[payload.subtask_id].update(
                    status="failed", ended_sequence=event.sequence, error=payload.error
                )
            case TaskCompleted() | TaskFailed() | TaskCancelled() | TaskRejected():
                ended = True
    if ended:
        for node in nodes.values():
            if node["status"] in ("pending", "running"):
                node["status"] = "abandoned"
    state = fold(events)
    return SubtaskTree(
        task_id=events[0].task_id,
        mode=plan.execution_mode.value.lower() if plan else state.mode.value.lower(),
        plan_sequence=plan_sequence,
        max_parallel=plan.max_parallel if plan else None,
        task_status=state.status.value,
        subtasks=[SubtaskNode.model_validate(node) for node in nodes.values()],
    )
