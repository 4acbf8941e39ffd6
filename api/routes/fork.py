"""``POST /v1/tasks/{task_id}/fork`` and ``GET /v1/compare``: forks and side-by-side runs (docs/audit.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CallerDep, OperatorDep, ResourcesDep
from api.history import task_history_of_org
from api.routes.tasks import PRODUCER, PRODUCER_VERSION, task_id_for
from audit.compare import Comparison, compare
from audit.fork import ForkError, check_fork
from schemas.requests import RequestHeader, TaskForkRequested
from streams.topics import REQUESTS

router = APIRouter(tags=["audit"])


class ForkCreate(BaseModel):
    """Where to branch and what to change; the fork runs as the source's user, for the caller's org."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"examples": [{"at": 4, "model": "gpt-4o"}, {"at": 1, "input": "What is 6 * 9?"}]},
    )

    at: int = Field(ge=1, le=2**62, description="How many of the source's events the fork copies (N).")
    model: str | None = Field(
        default=None, min_length=1, max_length=200, description="Model for the fork's later LLM calls."
    )
    input: str | None = Field(
        default=None,
        min_length=1,
        max_length=32_000,
        description="New query (forking before the first LLM call) or a user message for the pending call.",
    )
    settings: dict[str, str] = Field(
        default_factory=dict,
        alias="set",
        max_length=16,
        description="Task settings to change: max_steps, max_attempts, max_parallel, token_budget, tier.",
    )


class ForkAcceptedResponse(BaseModel):
    task_id: str = Field(description="The fork's task id.")
    source_task_id: str
    at: int
    status: str = Field(description="`forking`: the processor copies the prefix and continues.")
    position: str = Field(description="Where the request landed in the log (`topic:partition:offset`).")
    links: dict[str, str]


@router.post(
    "/v1/tasks/{task_id}/fork",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ForkAcceptedResponse,
    operation_id="fork_task",
    summary="Start a new task from the first N events of this one, with changes",
    responses={
        403: {"description": "The caller is a viewer"},
        404: {"description": "No such task in the caller's org"},
        422: {"description": "The position or a change is not possible (the reason names it)"},
    },
)
async def fork_task(
    task_id: str,
    body: ForkCreate,
    resources: ResourcesDep,
    caller: OperatorDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Forking twice with the same key (per org) yields one fork."),
    ] = None,
) -> ForkAcceptedResponse:
    """Checks the fork against the source's history on the log, then asks the processor for it: the
    fork's first ``at`` events are copies of the source's, its event ``at`` is ``TaskForked``, and it
    continues live. A running source can be forked (its prefix so far)."""
    source = await task_history_of_org(resources, task_id, caller.org_id)
    try:
        check_fork(source, body.at, input=body.input, overrides=body.settings)
    except ForkError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from exc
    fork_id = task_id_for(caller.org_id, f"fork/{idempotency_key}" if idempotency_key else None)
    request = TaskForkRequested(
        header=RequestHeader(
            request_id=uuid.uuid4(),
            task_id=fork_id,
            org_id=caller.org_id,
            user_id=caller.user_id,
            issued_at=datetime.now(UTC),
            producer=PRODUCER,
            producer_version=PRODUCER_VERSION,
        ),
        source_task_id=task_id,
        prefix_events=body.at,
        model=body.model,
        input=body.input,
        overrides=body.settings,
    )
    position = await resources.producer.send_request(REQUESTS.name(resources.settings), request)
    return ForkAcceptedResponse(
        task_id=fork_id,
        source_task_id=task_id,
        at=body.at,
        status="forking",
        position=position.token(),
        links={
            "self": f"/v1/tasks/{fork_id}",
            "events": f"/v1/tasks/{fork_id}/events",
            "compare": f"/v1/compare?a={task_id}&b={fork_id}",
        },
    )


@router.get(
    "/v1/compare",
    response_model=Comparison,
    operation_id="compare_tasks",
    summary="Two tasks side by side: steps, outputs, tokens, cost, and where they first differ",
    responses={404: {"description": "No such task in the caller's org"}},
)
async def compare_tasks(
    resources: ResourcesDep,
    caller: CallerDep,
    a: Annotated[str, Query(min_length=1, max_length=200, description="A task id.")],
    b: Annotated[str, Query(min_length=1, max_length=200, description="Another task id.")],
) -> Comparison:
    """Both histories are read from the log (the source of truth), aligned by sequence."""
    first = await task_history_of_org(resources, a, caller.org_id)
    second = await task_history_of_org(resources, b, caller.org_id)
    return compare(first, second)
