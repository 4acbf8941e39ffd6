"""``POST /v1/tasks/{task_id}/reexecute``: today's decider over a task's history (docs/audit.md)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import OperatorDep, ResourcesDep
from api.history import task_history_of_org
from audit.reexecute import Report, reexecute

router = APIRouter(prefix="/v1/tasks", tags=["audit"])


@router.post(
    "/{task_id}/reexecute",
    response_model=Report,
    operation_id="reexecute_task",
    summary="Re-execute a task's history with today's decider",
    responses={
        403: {"description": "The caller is a viewer"},
        404: {"description": "No such task in the caller's org"},
    },
)
async def reexecute_task(task_id: str, resources: ResourcesDep, caller: OperatorDep) -> Report:
    """Reads the task's events from the log, feeds the recorded results to today's decider, and
    reports the first event it would decide differently (``outcome``: passed, diverged, unreplayable).
    Nothing is called and nothing is written."""
    return reexecute(await task_history_of_org(resources, task_id, caller.org_id))
