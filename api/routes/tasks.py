"""``/v1/tasks``: submit, cancel, read a task's state, events and approvals, decide approvals."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from api.deps import OrgQuery, Resources, ResourcesDep
from processors.llm.streaming import channel as token_channel
from processors.task.history import submission
from projections.agent_view import AgentRow
from projections.llm_call_view import LlmCallRow
from projections.task_view import TERMINAL_STATUSES, TaskView
from projections.tool_call_view import ToolCallRow
from schemas.events import Priority, TaskSubmitted
from schemas.requests import ApprovalDecided, CancellationRequested, RequestHeader, TaskRequest
from streams.history import partition_for
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
    not_before: AwareDatetime | None = Field(
        default=None, description="Start the task no earlier than this time (a delayed task)."
    )
    token_budget: int | None = Field(
        default=None,
        ge=1,
        le=2**62,
        description="Most tokens the task may use; the platform default if unset.",
    )
    user_role: Role | None = Field(
        default=None,
        description=(
            "The caller's role, which the tool policy decides on. Until API keys carry roles (issue 6), "
            "the caller states it; without one, only tools open to every caller run."
        ),
    )

    @field_validator("org_id", "user_id", "session_id")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not _IDENTIFIER.match(value):
            raise ValueError(
                "must be 1-128 characters of letters, digits and . _ : @ -, starting alphanumeric"
            )
        return value


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class TaskRequestBody(BaseModel):
    """Who asks, and why (recorded with what the request leads to)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    org_id: str = Field(description="Tenant of the caller; must be the task's.")
    user_id: str = Field(description="Who cancels or decides.")
    reason: str = Field(min_length=1, max_length=2000, description="Why.")

    @field_validator("org_id", "user_id")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(
                "must be 1-128 characters of letters, digits and . _ : @ -, starting alphanumeric"
            )
        return value


class RequestAcceptedResponse(BaseModel):
    task_id: str
    request_id: str
    status: str = Field(description="`requested`: the processor records what it leads to.")
    position: dict[str, Any] = Field(description="Kafka topic, partition and offset of the request.")
    links: dict[str, str]


class ApprovalView(BaseModel):
    approval_id: str
    tool: str
    arguments_json: str
    rule: str
    reason: str
    requested_at: datetime
    status: str = Field(description="pending, granted or rejected")
    decided_by: str | None = None
    decision_reason: str | None = None
    decided_at: datetime | None = None


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
            not_before=body.not_before,
            token_budget=body.token_budget,
            user_role=body.user_role.value if body.user_role else None,
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


async def _task_of_org(resources: Resources, task_id: str, org_id: str) -> TaskView:
    view = await resources.queries.task(task_id)
    if view is None or view.org_id != org_id:
        # The same answer for another org's task: its existence is not disclosed.
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} not found (or not projected yet)")
    return view


async def _send(resources: Resources, request: TaskRequest) -> RequestAcceptedResponse:
    topic = REQUESTS.name(resources.settings)
    offset = await resources.producer.send_request(topic, request)
    partition = partition_for(request.task_id, REQUESTS.partition_count(resources.settings))
    return RequestAcceptedResponse(
        task_id=request.task_id,
        request_id=str(request.header.request_id),
        status="requested",
        position={"topic": topic, "partition": partition, "offset": offset},
        links={"task": f"/v1/tasks/{request.task_id}", "events": f"/v1/tasks/{request.task_id}/events"},
    )


def _header(task_id: str, body: TaskRequestBody) -> RequestHeader:
    return RequestHeader(
        request_id=uuid.uuid4(),
        task_id=task_id,
        org_id=body.org_id,
        user_id=body.user_id,
        issued_at=datetime.now(UTC),
        producer=PRODUCER,
        producer_version=PRODUCER_VERSION,
    )


@router.post(
    "/{task_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RequestAcceptedResponse,
    operation_id="cancel_task",
    summary="Cancel a task",
    responses={
        404: {"description": "No such task in the caller's org"},
        409: {"description": "Already ended"},
    },
)
async def cancel_task(
    task_id: str, body: TaskRequestBody, resources: ResourcesDep
) -> RequestAcceptedResponse:
    """Ask the processor to cancel the task: in-flight effects are abandoned, late results ignored."""
    view = await _task_of_org(resources, task_id, body.org_id)
    if view.status in TERMINAL_STATUSES:
        raise HTTPException(status.HTTP_409_CONFLICT, f"task {task_id} already ended ({view.status})")
    return await _send(resources, CancellationRequested(header=_header(task_id, body), reason=body.reason))


@router.get(
    "/{task_id}/approvals",
    response_model=list[ApprovalView],
    operation_id="list_task_approvals",
    summary="A task's approvals",
)
async def list_task_approvals(task_id: str, resources: ResourcesDep, org_id: OrgQuery) -> list[ApprovalView]:
    await _task_of_org(resources, task_id, org_id)
    return [ApprovalView.model_validate(row) for row in await resources.queries.approvals(task_id)]


async def _decide(
    task_id: str, approval_id: str, approved: bool, body: TaskRequestBody, resources: Resources
) -> RequestAcceptedResponse:
    await _task_of_org(resources, task_id, body.org_id)
    approvals = {row["approval_id"]: row for row in await resources.queries.approvals(task_id)}
    found = approvals.get(approval_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} has no approval {approval_id}")
    if found["status"] != "pending":
        raise HTTPException(status.HTTP_409_CONFLICT, f"approval {approval_id} is already {found['status']}")
    request = ApprovalDecided(
        header=_header(task_id, body), approval_id=approval_id, approved=approved, reason=body.reason
    )
    return await _send(resources, request)


@router.post(
    "/{task_id}/approvals/{approval_id}/approve",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RequestAcceptedResponse,
    operation_id="approve_tool_call",
    summary="Approve a waiting tool call",
)
async def approve(
    task_id: str, approval_id: str, body: TaskRequestBody, resources: ResourcesDep
) -> RequestAcceptedResponse:
    return await _decide(task_id, approval_id, True, body, resources)


@router.post(
    "/{task_id}/approvals/{approval_id}/reject",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RequestAcceptedResponse,
    operation_id="reject_tool_call",
    summary="Reject a waiting tool call",
)
async def reject(
    task_id: str, approval_id: str, body: TaskRequestBody, resources: ResourcesDep
) -> RequestAcceptedResponse:
    return await _decide(task_id, approval_id, False, body, resources)


# A comment line every so often keeps proxies from closing an idle stream.
_KEEPALIVE_SECONDS = 15.0


@router.get(
    "/{task_id}/stream",
    operation_id="stream_task_tokens",
    summary="Live tokens of the task's LLM calls (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 404: {"description": "No such task in the org"}},
)
async def stream_task_tokens(
    task_id: str,
    request: Request,
    resources: ResourcesDep,
    org_id: OrgQuery,
    max_seconds: Annotated[
        float, Query(gt=0, le=3600, description="Close the stream after this long.")
    ] = 300,
) -> StreamingResponse:
    """Each token delta as an ``event: token`` with JSON ``{step, attempt, delta}`` (``done: true`` ends a
    call), while the processor streams the task's model answers (``AGENTLOG_LLM_STREAM_TOKENS``). The
    live view is best effort; the recorded answer is the task's ``LlmCallCompleted`` event."""
    await _task_of_org(resources, task_id, org_id)
    pubsub = resources.redis.pubsub()
    await pubsub.subscribe(token_channel(task_id))

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_seconds
        quiet_since = loop.time()
        try:
            yield ": subscribed\n\n"
            while loop.time() < deadline and not await request.is_disconnected():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    quiet_since = loop.time()
                    yield f"event: token\ndata: {message['data'].decode()}\n\n"
                elif loop.time() - quiet_since > _KEEPALIVE_SECONDS:
                    quiet_since = loop.time()
                    yield ": keep-alive\n\n"
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get(
    "/{task_id}/llm-calls",
    response_model=list[LlmCallRow],
    operation_id="list_task_llm_calls",
    summary="A task's LLM calls (model, tier, tokens, cost, latency, cache hit)",
)
async def list_task_llm_calls(task_id: str, resources: ResourcesDep, org_id: OrgQuery) -> list[LlmCallRow]:
    await _task_of_org(resources, task_id, org_id)
    return await resources.queries.llm_calls(task_id)


@router.get(
    "/{task_id}/tool-calls",
    response_model=list[ToolCallRow],
    operation_id="list_task_tool_calls",
    summary="A task's tool calls (arguments, policy decision, output or error)",
)
async def list_task_tool_calls(task_id: str, resources: ResourcesDep, org_id: OrgQuery) -> list[ToolCallRow]:
    await _task_of_org(resources, task_id, org_id)
    return await resources.queries.tool_calls(task_id)


@router.get(
    "/{task_id}/agents",
    response_model=list[AgentRow],
    operation_id="list_task_agents",
    summary="A task's agents (the main one and its sub-agents) with their usage",
)
async def list_task_agents(task_id: str, resources: ResourcesDep, org_id: OrgQuery) -> list[AgentRow]:
    await _task_of_org(resources, task_id, org_id)
    return await resources.queries.agents(task_id)
