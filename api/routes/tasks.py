"""``/v1/tasks``: submit a task, read its state and its events from the read model."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import ResourcesDep
from processors.task.history import submission
from projections.task_view import TaskView
from schemas.events import Priority, TaskSubmitted
from streams.topics import REQUESTS

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

PRODUCER = "agentlog-api"
PRODUCER_VERSION = "0.1.0"
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
# Fixed namespace: the same (org, idempotency key) always maps to the same task id.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("9e4c4a55-2f0b-4a8e-8f57-3c1e1b0d6a20")


def task_id_for(org_id: str, idempotency_key: str | None) -> str:
    """The task id of a submission: derived from (org, key) when a key is given, else random."""
    if idempotency_key:
        return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{org_id}/{idempotency_key}"))
    return str(uuid.uuid4())


class TaskCreate(BaseModel):
    """A task submission."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    query: str = Field(min_length=1, max_length=32_000, description="What the task asks for.")
    org_id: str = Field(description="Tenant that owns the task.")
    user_id: str = Field(description="User on whose behalf the task runs.")
    session_id: str | None = Field(default=None, description="Session/conversation id.")
    context: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Extra key/value context."
    )
    priority: Priority = Priority.NORMAL
    idempotency_key: str | None = Field(
        default=None,
        max_length=200,
        description="Submitting twice with the same key (per org) yields the same task, run once.",
    )

    @field_validator("org_id", "user_id", "session_id")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not _IDENTIFIER.match(value):
            raise ValueError(
                "must be 1-128 characters of letters, digits and . _ : @ -, starting alphanumeric"
            )
        return value


class TaskAcceptedResponse(BaseModel):
    task_id: str
    status: str
    links: dict[str, str]


class TaskEventsPage(BaseModel):
    task_id: str
    events: list[dict[str, Any]]
    next_after: int | None = Field(description="Pass as ?after= for the next page; null when no more.")


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAcceptedResponse,
    operation_id="submit_task",
    summary="Submit a task",
)
async def submit_task(body: TaskCreate, resources: ResourcesDep) -> TaskAcceptedResponse:
    """Validate, record a ``TaskSubmitted`` event on the requests topic, answer with the task id."""
    task_id = task_id_for(body.org_id, body.idempotency_key)
    stamped = submission(
        task_id=task_id,
        org_id=body.org_id,
        user_id=body.user_id,
        payload=TaskSubmitted(
            query=body.query,
            context=body.context,
            priority=body.priority,
            session_id=body.session_id,
            idempotency_key=body.idempotency_key,
        ),
        now=datetime.now(UTC),
        producer=PRODUCER,
        producer_version=PRODUCER_VERSION,
    )
    await resources.producer.publish(REQUESTS.name(resources.settings), [stamped])
    return TaskAcceptedResponse(
        task_id=task_id,
        status="submitted",
        links={"self": f"/v1/tasks/{task_id}", "events": f"/v1/tasks/{task_id}/events"},
    )


@router.get("/{task_id}", response_model=TaskView, operation_id="get_task", summary="A task's read model")
async def get_task(task_id: str, resources: ResourcesDep) -> TaskView:
    view = await resources.queries.task(task_id)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} not found (or not projected yet)")
    return view


@router.get(
    "/{task_id}/events",
    response_model=TaskEventsPage,
    operation_id="list_task_events",
    summary="A task's events",
)
async def list_task_events(
    task_id: str,
    resources: ResourcesDep,
    after: Annotated[int, Query(ge=-1, description="Return events with sequence greater than this.")] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> TaskEventsPage:
    events = await resources.queries.events(task_id, after_sequence=after, limit=limit)
    if not events and after == -1 and await resources.queries.task(task_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} not found (or not projected yet)")
    next_after = events[-1]["sequence"] if len(events) == limit else None
    return TaskEventsPage(task_id=task_id, events=events, next_after=next_after)
