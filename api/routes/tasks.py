"""``/v1/tasks``: submit, cancel, read a task's state, events and approvals, decide approvals."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from api.auth import Caller
from api.deps import AfterDep, CallerDep, OperatorDep, Resources, ResourcesDep
from processors.task.history import submission
from projections.agent_view import AgentRow
from projections.llm_call_view import LlmCallRow
from projections.task_view import TERMINAL_STATUSES, TaskFilter, TaskView
from projections.tool_call_view import ToolCallRow
from schemas.events import Priority, TaskSubmitted, millisecond_utc
from schemas.requests import ApprovalDecided, CancellationRequested, RequestHeader, TaskRequest
from streams import tracing
from streams.logs import task_context
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


def _utf8_text(value: str) -> str:
    """``value``, if it can be written as UTF-8 (JSON's \\ud800 escapes decode to lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"must be valid Unicode text: a lone surrogate at character {exc.start}") from exc
    return value


class TaskCreate(BaseModel):
    """A task submission. The org, the user and the role the tool policy decides on are the caller's."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {"query": "What is (17 + 25) * 3?", "session_id": "chat-42", "priority": "NORMAL"},
                {"query": "Summarise the quarterly report", "not_before": "2030-01-01T09:00:00Z"},
            ]
        },
    )

    query: str = Field(min_length=1, max_length=32_000, description="What the task asks for.")
    session_id: str | None = Field(default=None, description="Session/conversation id.")
    context: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Extra key/value context."
    )
    priority: Priority = Priority.NORMAL
    not_before: AwareDatetime | None = Field(
        default=None, description="Start the task no earlier than this time (a delayed task)."
    )
    token_budget: int | None = Field(
        default=None,
        ge=1,
        le=2**62,
        description="Most tokens the task may use; the platform default if unset.",
    )

    @field_validator("query")
    @classmethod
    def _query_text(cls, value: str) -> str:
        return _utf8_text(value)

    @field_validator("context")
    @classmethod
    def _context_text(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            _utf8_text(key)
            _utf8_text(item)
        return value

    @field_validator("not_before")
    @classmethod
    def _utc_instant(cls, value: datetime | None) -> datetime | None:
        # The event keeps UTC milliseconds; an offset time with no UTC equivalent (year 0) is the
        # body's fault, said here rather than a 500 when the event is built.
        return millisecond_utc(value)

    @field_validator("session_id")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not _IDENTIFIER.match(value):
            raise ValueError(
                "must be 1-128 characters of letters, digits and . _ : @ -, starting alphanumeric"
            )
        return value


class TaskRequestBody(BaseModel):
    """Why (recorded with what the request leads to); who asks is the caller."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra={"examples": [{"reason": "not needed"}]}
    )

    reason: str = Field(min_length=1, max_length=2000, description="Why.")


_POSITION_DOC = (
    "Where the record landed in the log (`topic:partition:offset`); pass it as `?after=` to a query"
    " to read what it led to once projected."
)


class RequestAcceptedResponse(BaseModel):
    task_id: str
    request_id: str
    status: str = Field(description="`requested`: the processor records what it leads to.")
    position: str = Field(description=_POSITION_DOC)
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
    position: str = Field(description=_POSITION_DOC)
    links: dict[str, str]


class TaskPage(BaseModel):
    tasks: list[TaskView]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null when no more.")


class TaskExpansion(BaseModel):
    agents: list[AgentRow] | None = Field(
        default=None, description="The main agent and its subtasks' agents."
    )
    llm_calls: list[LlmCallRow] | None = None
    tool_calls: list[ToolCallRow] | None = None
    approvals: list[ApprovalView] | None = None


class TaskDetail(TaskView):
    expanded: TaskExpansion = Field(
        default_factory=TaskExpansion, description="What ?expand= asked for (agents, llm_calls, ...)."
    )


class Expand(StrEnum):
    AGENTS = "agents"
    LLM_CALLS = "llm_calls"
    TOOL_CALLS = "tool_calls"
    APPROVALS = "approvals"


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
    responses={403: {"description": "The caller is a viewer"}},
)
async def submit_task(
    body: TaskCreate,
    request: Request,
    resources: ResourcesDep,
    caller: OperatorDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="Submitting twice with the same key (per org) yields the same task, run once.",
        ),
    ] = None,
) -> TaskAcceptedResponse:
    """Validate, record a ``TaskSubmitted`` event on the requests topic, answer with the task id and
    where the event landed."""
    task_id = task_id_for(caller.org_id, idempotency_key)
    stamped = submission(
        task_id=task_id,
        org_id=caller.org_id,
        user_id=caller.user_id,
        payload=TaskSubmitted(
            query=body.query,
            context=body.context,
            priority=body.priority,
            session_id=body.session_id,
            idempotency_key=idempotency_key,
            not_before=body.not_before,
            token_budget=body.token_budget,
            user_role=caller.role.value,
        ),
        now=datetime.now(UTC),
        producer=PRODUCER,
        producer_version=PRODUCER_VERSION,
    )
    # Tracing on: the request's server span already continues the caller's traceparent, and the
    # submission's span is its child. Off: a valid incoming traceparent is handed on as it is
    # (none, or an invalid one: the producer starts a new trace).
    incoming = request.headers.get("traceparent")
    parent = None if tracing.enabled() or tracing.context_of(incoming) is None else incoming
    with (
        tracing.span(
            "task submit",
            parent,
            kind=tracing.SpanKind.PRODUCER,
            attributes={"agentlog.task_id": task_id, "agentlog.org_id": caller.org_id},
        ) as traceparent,
        task_context(task_id, caller.org_id, traceparent),
    ):
        [position] = await resources.producer.publish(
            REQUESTS.name(resources.settings), [stamped], traceparent=traceparent
        )
    return TaskAcceptedResponse(
        task_id=task_id,
        status="submitted",
        position=position.token(),
        links={"self": f"/v1/tasks/{task_id}", "events": f"/v1/tasks/{task_id}/events"},
    )


def _cursor(view: TaskView) -> str:
    assert view.submitted_at is not None  # listings hold only tasks whose submission is projected
    raw = json.dumps([view.submitted_at.isoformat(), view.task_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        submitted_at, task_id = json.loads(raw)
        return datetime.fromisoformat(submitted_at), str(task_id)
    except (ValueError, TypeError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"cursor {cursor!r} is not valid") from exc


@router.get(
    "",
    response_model=TaskPage,
    operation_id="list_tasks",
    summary="The org's tasks, newest first, filtered and cursor-paged",
)
async def list_tasks(
    resources: ResourcesDep,
    caller: CallerDep,
    _: AfterDep,
    task_status: Annotated[
        str | None,
        Query(alias="status", description="submitted, running, completed, failed, cancelled or rejected"),
    ] = None,
    user_id: Annotated[str | None, Query(max_length=128)] = None,
    session_id: Annotated[str | None, Query(max_length=128)] = None,
    mode: Annotated[str | None, Query(max_length=64, description="Execution mode, e.g. SINGLE.")] = None,
    submitted_from: Annotated[
        AwareDatetime | None, Query(alias="from", description="Submitted at or after this time.")
    ] = None,
    submitted_to: Annotated[
        AwareDatetime | None, Query(alias="to", description="Submitted before this time.")
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=512, description="next_cursor of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> TaskPage:
    where = TaskFilter(
        org_id=caller.org_id,
        status=task_status,
        user_id=user_id,
        session_id=session_id,
        execution_mode=mode,
        submitted_from=submitted_from,
        submitted_to=submitted_to,
        before=_parse_cursor(cursor) if cursor else None,
    )
    tasks = await resources.queries.tasks(where, limit=limit)
    return TaskPage(tasks=tasks, next_cursor=_cursor(tasks[-1]) if len(tasks) == limit else None)


@router.get(
    "/{task_id}",
    response_model=TaskDetail,
    operation_id="get_task",
    summary="A task's read model, optionally with its agents, LLM calls, tool calls and approvals",
    responses={404: {"description": "No such task in the caller's org"}},
)
async def get_task(
    task_id: str,
    resources: ResourcesDep,
    caller: CallerDep,
    _: AfterDep,
    expand: Annotated[list[Expand] | None, Query(description="What to include besides the task.")] = None,
) -> TaskDetail:
    view = await _task_of_org(resources, task_id, caller.org_id)
    wanted = set(expand or ())
    queries = resources.queries
    expansion = TaskExpansion(
        agents=await queries.agents(task_id) if Expand.AGENTS in wanted else None,
        llm_calls=await queries.llm_calls(task_id) if Expand.LLM_CALLS in wanted else None,
        tool_calls=await queries.tool_calls(task_id) if Expand.TOOL_CALLS in wanted else None,
        approvals=(
            [ApprovalView.model_validate(row) for row in await queries.approvals(task_id)]
            if Expand.APPROVALS in wanted
            else None
        ),
    )
    return TaskDetail(**view.model_dump(), expanded=expansion)


@router.get(
    "/{task_id}/events",
    response_model=TaskEventsPage,
    operation_id="list_task_events",
    summary="A task's events, in sequence order, paged",
    responses={404: {"description": "No such task in the caller's org"}},
)
async def list_task_events(
    task_id: str,
    resources: ResourcesDep,
    caller: CallerDep,
    _: AfterDep,
    after_sequence: Annotated[
        int, Query(alias="after_sequence", ge=-1, description="Return events with a greater sequence.")
    ] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> TaskEventsPage:
    await _task_of_org(resources, task_id, caller.org_id)
    events = await resources.queries.events(task_id, after_sequence=after_sequence, limit=limit)
    next_after = events[-1]["sequence"] if len(events) == limit else None
    return TaskEventsPage(task_id=task_id, events=events, next_after=next_after)


async def _task_of_org(resources: Resources, task_id: str, org_id: str) -> TaskView:
    view = await resources.queries.task(task_id)
    if view is None or view.org_id != org_id:
        # The same answer for another org's task: its existence is not disclosed.
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} not found (or not projected yet)")
    return view


async def _send(resources: Resources, request: TaskRequest) -> RequestAcceptedResponse:
    position = await resources.producer.send_request(REQUESTS.name(resources.settings), request)
    return RequestAcceptedResponse(
        task_id=request.task_id,
        request_id=str(request.header.request_id),
        status="requested",
        position=position.token(),
        links={"task": f"/v1/tasks/{request.task_id}", "events": f"/v1/tasks/{request.task_id}/events"},
    )


def _header(task_id: str, caller: Caller) -> RequestHeader:
    return RequestHeader(
        request_id=uuid.uuid4(),
        task_id=task_id,
        org_id=caller.org_id,
        user_id=caller.user_id,
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
        403: {"description": "The caller is a viewer"},
        404: {"description": "No such task in the caller's org"},
        409: {"description": "Already ended"},
    },
)
async def cancel_task(
    task_id: str, body: TaskRequestBody, resources: ResourcesDep, caller: OperatorDep
) -> RequestAcceptedResponse:
    """Ask the processor to cancel the task: in-flight effects are abandoned, late results ignored."""
    view = await _task_of_org(resources, task_id, caller.org_id)
    if view.status in TERMINAL_STATUSES:
        raise HTTPException(status.HTTP_409_CONFLICT, f"task {task_id} already ended ({view.status})")
    return await _send(resources, CancellationRequested(header=_header(task_id, caller), reason=body.reason))


@router.get(
    "/{task_id}/approvals",
    response_model=list[ApprovalView],
    operation_id="list_task_approvals",
    summary="A task's approvals",
    responses={404: {"description": "No such task in the caller's org"}},
)
async def list_task_approvals(
    task_id: str, resources: ResourcesDep, caller: CallerDep, _: AfterDep
) -> list[ApprovalView]:
    await _task_of_org(resources, task_id, caller.org_id)
    return [ApprovalView.model_validate(row) for row in await resources.queries.approvals(task_id)]


async def _decide(
    task_id: str,
    approval_id: str,
    approved: bool,
    body: TaskRequestBody,
    resources: Resources,
    caller: Caller,
) -> RequestAcceptedResponse:
    await _task_of_org(resources, task_id, caller.org_id)
    approvals = {row["approval_id"]: row for row in await resources.queries.approvals(task_id)}
    found = approvals.get(approval_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} has no approval {approval_id}")
    if found["status"] != "pending":
        raise HTTPException(status.HTTP_409_CONFLICT, f"approval {approval_id} is already {found['status']}")
    request = ApprovalDecided(
        header=_header(task_id, caller), approval_id=approval_id, approved=approved, reason=body.reason
    )
    return await _send(resources, request)


_DECISION_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "The caller is a viewer"},
    404: {"description": "No such task or approval in the caller's org"},
    409: {"description": "Already decided"},
}


@router.post(
    "/{task_id}/approvals/{approval_id}/approve",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RequestAcceptedResponse,
    operation_id="approve_tool_call",
    summary="Approve a waiting tool call",
    responses=_DECISION_RESPONSES,
)
async def approve(
    task_id: str, approval_id: str, body: TaskRequestBody, resources: ResourcesDep, caller: OperatorDep
) -> RequestAcceptedResponse:
    return await _decide(task_id, approval_id, True, body, resources, caller)


@router.post(
    "/{task_id}/approvals/{approval_id}/reject",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RequestAcceptedResponse,
    operation_id="reject_tool_call",
    summary="Reject a waiting tool call",
    responses=_DECISION_RESPONSES,
)
async def reject(
    task_id: str, approval_id: str, body: TaskRequestBody, resources: ResourcesDep, caller: OperatorDep
) -> RequestAcceptedResponse:
    return await _decide(task_id, approval_id, False, body, resources, caller)


@router.get(
    "/{task_id}/llm-calls",
    response_model=list[LlmCallRow],
    operation_id="list_task_llm_calls",
    summary="A task's LLM calls (model, tier, tokens, cost, latency, cache hit)",
)
async def list_task_llm_calls(
    task_id: str, resources: ResourcesDep, caller: CallerDep, _: AfterDep
) -> list[LlmCallRow]:
    await _task_of_org(resources, task_id, caller.org_id)
    return await resources.queries.llm_calls(task_id)


@router.get(
    "/{task_id}/tool-calls",
    response_model=list[ToolCallRow],
    operation_id="list_task_tool_calls",
    summary="A task's tool calls (arguments, policy decision, output or error)",
)
async def list_task_tool_calls(
    task_id: str, resources: ResourcesDep, caller: CallerDep, _: AfterDep
) -> list[ToolCallRow]:
    await _task_of_org(resources, task_id, caller.org_id)
    return await resources.queries.tool_calls(task_id)


@router.get(
    "/{task_id}/agents",
    response_model=list[AgentRow],
    operation_id="list_task_agents",
    summary="A task's agents (the main one and its sub-agents) with their usage",
)
async def list_task_agents(
    task_id: str, resources: ResourcesDep, caller: CallerDep, _: AfterDep
) -> list[AgentRow]:
    await _task_of_org(resources, task_id, caller.org_id)
    return await resources.queries.agents(task_id)
