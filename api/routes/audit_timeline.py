"""A task's history read back from the log: its timeline, subtask tree, state at any point and the
difference between two points (``agentlog replay``/``state``/``diff`` over HTTP; docs/audit.md).

Every answer is computed from the task's events on Kafka (not the read models), by the same pure
functions as the CLI (``audit.timetravel``). Any authenticated caller of the task's org may read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import AwareDatetime, BaseModel, Field

from api.deps import CallerDep, ResourcesDep
from api.history import task_history
from api.routes.tasks import _task_of_org
from audit.timetravel import (
    PositionError,
    StateChange,
    SubtaskTree,
    TimelineRow,
    diff_states,
    sequence_at_time,
    state_at,
    subtask_tree,
    timeline,
)
from schemas.events import Event

router = APIRouter(prefix="/v1/tasks", tags=["audit"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such task in the caller's org"}}
_BAD_POSITION: dict[int | str, dict[str, Any]] = {
    422: {"description": "A sequence or time outside the task's history, or a bad range"}
}
_MAX_SEQUENCE = 2**63 - 1


class TaskTimeline(BaseModel):
    task_id: str
    rows: list[TimelineRow] = Field(description="One row per event, in sequence order.")


class TaskStateAt(BaseModel):
    """The task's state after one of its events: the fold of ``evolve`` over the history up to it."""

    task_id: str
    sequence: int = Field(description="The last event folded in.")
    event_type: str
    occurred_at: datetime
    state: dict[str, Any] = Field(description="The decider's TaskState, as the processor checkpoints it.")


class TaskStateDiff(BaseModel):
    task_id: str
    from_: int = Field(alias="from", serialization_alias="from")
    to: int
    changes: list[StateChange] = Field(description="JSON-pointer paths into the state, before and after.")


async def _history(resources: ResourcesDep, caller: CallerDep, task_id: str) -> list[Event]:
    await _task_of_org(resources, task_id, caller.org_id)
    events = await task_history(resources, task_id)
    if not events:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} has no events on the log")
    return events


def _unprocessable(exc: Exception) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc))


@router.get(
    "/{task_id}/timeline",
    response_model=TaskTimeline,
    operation_id="get_task_timeline",
    summary="A task's timeline from the log: step, agent, model, tool, tokens, cost, latency, gaps",
    responses=_NOT_FOUND,
)
async def get_task_timeline(task_id: str, resources: ResourcesDep, caller: CallerDep) -> TaskTimeline:
    return TaskTimeline(task_id=task_id, rows=timeline(await _history(resources, caller, task_id)))


@router.get(
    "/{task_id}/subtask-tree",
    response_model=SubtaskTree,
    operation_id="get_task_subtask_tree",
    summary="A task's plan as a DAG of subtasks, each with its status, from the log",
    responses=_NOT_FOUND,
)
async def get_task_subtask_tree(task_id: str, resources: ResourcesDep, caller: CallerDep) -> SubtaskTree:
    return subtask_tree(await _history(resources, caller, task_id))


@router.get(
    "/{task_id}/state",
    response_model=TaskStateAt,
    operation_id="get_task_state_at",
    summary="A task's state after event `at` (or at time `at_time`): time travel over the log",
    responses={**_NOT_FOUND, **_BAD_POSITION},
)
async def get_task_state_at(
    task_id: str,
    resources: ResourcesDep,
    caller: CallerDep,
    at: Annotated[
        int | None, Query(ge=0, le=_MAX_SEQUENCE, description="After this event (its sequence number).")
    ] = None,
    at_time: Annotated[
        AwareDatetime | None, Query(description="As it was at this time (ISO 8601 with a zone).")
    ] = None,
) -> TaskStateAt:
    if (at is None) == (at_time is None):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "give exactly one of at or at_time")
    events = await _history(resources, caller, task_id)
    try:
        sequence = sequence_at_time(events, at_time) if at_time is not None else at or 0
        state = state_at(events, sequence)
    except PositionError as exc:
        raise _unprocessable(exc) from exc
    event = next(e for e in events if e.sequence == sequence)
    return TaskStateAt(
        task_id=task_id,
        sequence=sequence,
        event_type=event.event_type,
        occurred_at=event.envelope.occurred_at,
        state=state.model_dump(mode="json"),
    )


@router.get(
    "/{task_id}/diff",
    response_model=TaskStateDiff,
    response_model_by_alias=True,
    operation_id="diff_task_states",
    summary="What changed in a task's state between event `from` and event `to`",
    responses={**_NOT_FOUND, **_BAD_POSITION},
)
async def diff_task_states(
    task_id: str,
    resources: ResourcesDep,
    caller: CallerDep,
    from_: Annotated[
        int, Query(alias="from", ge=0, le=_MAX_SEQUENCE, description="The earlier point: after this event.")
    ],
    to: Annotated[int, Query(ge=0, le=_MAX_SEQUENCE, description="The later point: after this event.")],
) -> TaskStateDiff:
    if from_ > to:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"from {from_} is after to {to}")
    events = await _history(resources, caller, task_id)
    try:
        changes = diff_states(state_at(events, from_), state_at(events, to))
    except PositionError as exc:
        raise _unprocessable(exc) from exc
    return TaskStateDiff.model_validate({"task_id": task_id, "from": from_, "to": to, "changes": changes})
