"""The task decider: ``decide(command, state) -> payloads`` and ``evolve(state, event) -> state``.

Pure: no I/O, no clock, no randomness. Everything that varies (model answers, tool outputs,
latencies) comes in with the command; effects to perform are derived from the state by
:func:`pending_effects` and performed by the processor shell, which records their results as
commands. Replaying a task is ``fold(evolve, history)``.

Agent loop: TaskSubmitted -> TaskAccepted + LlmCallRequested(step 1) (THINK) -> LlmCallCompleted
-> either ToolCallRequested... (ACT) -> ToolCallCompleted/Failed -> LlmCallRequested(step n+1)
-> ... or TaskCompleted (RESPOND). Limits: ``max_steps`` model calls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import (
    AgentStepFinished,
    AgentStepStarted,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    BudgetExceeded,
    BudgetReserved,
    BudgetThresholdReached,
    CacheKind,
    Event,
    ExecutionMode,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    Payload,
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

SYSTEM_PROMPT = (
    "You are an agentlog agent. Answer the user's task. When arithmetic is needed, call the "
    "`calculator` tool with a single expression instead of computing it yourself."
)


class Status(StrEnum):
    NEW = "new"
    SUBMITTED = "submitted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.REJECTED})


class HistoryError(ValueError):
    """An event does not fit the task's history (gap in sequence, broken hash link, wrong task)."""


class TaskState(BaseModel):
    """Everything the decider knows about one task; JSON-serializable for the processor's table."""

    model_config = ConfigDict(frozen=True)

    task_id: str = ""
    status: Status = Status.NEW
    org_id: str = ""
    user_id: str = ""
    correlation_id: str = ""
    query: str = ""
    sequence: int = -1
    last_event_id: str | None = None
    last_digest: str | None = None
    step: int = 0
    max_steps: int = 0
    provider: str = ""
    model: str = ""
    offline: bool = False
    tools: tuple[str, ...] = ()
    # The agent's conversation, each message as compact JSON text: requests record only the
    # messages they add, and the gateway posts the conversation without re-serialising it.
    messages: tuple[str, ...] = ()
    pending_llm: LlmCallRequested | None = None
    pending_tools: tuple[ToolCallRequested, ...] = ()
    llm_calls: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    result: str | None = None
    error: str | None = None


# -- commands --------------------------------------------------------------------------------


class StartTask(BaseModel):
    """Accept a submitted task and ask the model for the first step."""

    model_config = ConfigDict(frozen=True)
    provider: str
    model: str
    offline: bool
    max_steps: int = Field(ge=1)
    tools: tuple[str, ...] = ()


class ToolCall(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    name: str
    arguments_json: str


class RecordModelResponse(BaseModel):
    """The gateway's answer to the pending LLM call."""

    model_config = ConfigDict(frozen=True)
    idempotency_key: str
    model: str
    provider: str | None = None  # None: the provider the request named (no fallback happened)
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float = 0.0
    latency_ms: float
    cache_kind: CacheKind | None = None  # set when the answer came from the prompt cache
    attempt: int = 1
    response_json: str


class RecordModelFailure(BaseModel):
    model_config = ConfigDict(frozen=True)
    idempotency_key: str
    error_type: str
    error: str
    latency_ms: float


class RecordToolResult(BaseModel):
    """A tool's output, or its error when ``error_type`` is set."""

    model_config = ConfigDict(frozen=True)
    idempotency_key: str
    output: str = ""
    error_type: str | None = None
    error: str | None = None
    latency_ms: float


Command = StartTask | RecordModelResponse | RecordModelFailure | RecordToolResult

# -- effects ---------------------------------------------------------------------------------

Effect = LlmCallRequested | ToolCallRequested


def pending_effects(state: TaskState) -> list[Effect]:
    """Effects requested and not yet recorded: what the shell must perform (again, after a crash)."""
    if state.status is not Status.RUNNING:
        return []
    if state.pending_llm is not None:
        return [state.pending_llm]
    return list(state.pending_tools)


def idempotency_key(task_id: str, step: int, tool_call_id: str | None = None) -> str:
    base = f"{task_id}:step-{step}"
    return f"{base}:tool-{tool_call_id}" if tool_call_id else base


def _message(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def conversation_json(state: TaskState) -> str:
    """The agent's conversation as a JSON array: the prompt of its next (or pending) LLM call."""
    return f"[{','.join(state.messages)}]"


# -- decide ----------------------------------------------------------------------------------


def decide(command: Command, state: TaskState) -> list[Payload]:
    """The events that ``command`` causes in ``state``; ``[]`` for a stale or duplicate command."""
    match command:
        case StartTask():
            return _start(command, state)
        case RecordModelResponse():
            return _model_response(command, state)
        case RecordModelFailure():
            return _model_failure(command, state)
        case RecordToolResult():
            return _tool_result(command, state)
    raise TypeError(f"unknown command {command!r}")


def _llm_request(
    state: TaskState, step: int, new_messages: Iterable[dict[str, Any]] = ()
) -> LlmCallRequested:
    """The request of ``step``: it records only the messages it adds to the conversation."""
    added = tuple(_message(m) for m in new_messages)
    prompt = (*state.messages, *added)
    return LlmCallRequested(
        step=step,
        idempotency_key=idempotency_key(state.task_id, step),
        provider=state.provider,
        model=state.model,
        messages_json=f"[{','.join(added)}]",
        prompt_messages=len(prompt),
        prompt_sha256=hashlib.sha256(f"[{','.join(prompt)}]".encode()).hexdigest(),
        tools=list(state.tools),
    )


def _totals(state: TaskState) -> dict[str, Any]:
    """Usage totals of a task-ending event, from the state after the task's last effect."""
    return {
        "steps": state.step,
        "llm_calls": state.llm_calls,
        "tool_calls": state.tool_calls,
        "prompt_tokens": state.prompt_tokens,
        "completion_tokens": state.completion_tokens,
        "total_tokens": state.prompt_tokens + state.completion_tokens,
        "cost_usd": round(state.cost_usd, 9),
    }


def _start(command: StartTask, state: TaskState) -> list[Payload]:
    if state.status is not Status.SUBMITTED:
        return []
    accepted = TaskAccepted(
        execution_mode=ExecutionMode.SIMPLE,
        max_steps=command.max_steps,
        provider=command.provider,
        model=command.model,
        offline=command.offline,
    )
    started = state.model_copy(
        update={"provider": command.provider, "model": command.model, "tools": command.tools}
    )
    return [accepted, _llm_request(started, 1, _initial_messages(state.query))]


def _initial_messages(query: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": query}]


def _model_response(command: RecordModelResponse, state: TaskState) -> list[Payload]:
    pending = state.pending_llm
    if (
        state.status is not Status.RUNNING
        or pending is None
        or pending.idempotency_key != command.idempotency_key
    ):
        return []
    completed = LlmCallCompleted(
        step=pending.step,
        idempotency_key=pending.idempotency_key,
        provider=command.provider or pending.provider,
        model=command.model,
        content=command.content,
        tool_calls_json=json.dumps([c.model_dump() for c in command.tool_calls], separators=(",", ":")),
        finish_reason=command.finish_reason,
        prompt_tokens=command.prompt_tokens,
        completion_tokens=command.completion_tokens,
        total_tokens=command.prompt_tokens + command.completion_tokens,
        cost_usd=0.0 if command.cache_kind else command.cost_usd,
        latency_ms=command.latency_ms,
        cache_hit=command.cache_kind is not None,
        cache_kind=command.cache_kind,
        attempt=command.attempt,
        offline=state.offline,
        response_json=command.response_json,
    )
    if not command.tool_calls:
        after = _apply_payload(state, completed)
        return [completed, TaskCompleted(result=command.content or "", **_totals(after))]
    requests: list[Payload] = [
        ToolCallRequested(
            step=pending.step,
            idempotency_key=idempotency_key(state.task_id, pending.step, call.id),
            tool_call_id=call.id,
            tool=call.name,
            arguments_json=call.arguments_json,
        )
        for call in command.tool_calls
    ]
    return [completed, *requests]


def _model_failure(command: RecordModelFailure, state: TaskState) -> list[Payload]:
    pending = state.pending_llm
    if (
        state.status is not Status.RUNNING
        or pending is None
        or pending.idempotency_key != command.idempotency_key
    ):
        return []
    failed = LlmCallFailed(
        step=pending.step,
        idempotency_key=pending.idempotency_key,
        provider=pending.provider,
        model=pending.model,
        error_type=command.error_type,
        error=command.error,
        latency_ms=command.latency_ms,
    )
    return [
        failed,
        TaskFailed(
            reason="llm_error",
            error=f"{command.error_type}: {command.error}",
            **_totals(_apply_payload(state, failed)),
        ),
    ]


def _tool_result(command: RecordToolResult, state: TaskState) -> list[Payload]:
    match = [t for t in state.pending_tools if t.idempotency_key == command.idempotency_key]
    if state.status is not Status.RUNNING or not match:
        return []
    request = match[0]
    result: Payload
    if command.error_type is None:
        result = ToolCallCompleted(
            step=request.step,
            idempotency_key=request.idempotency_key,
            tool_call_id=request.tool_call_id,
            tool=request.tool,
            output=command.output,
            latency_ms=command.latency_ms,
        )
    else:
        result = ToolCallFailed(
            step=request.step,
            idempotency_key=request.idempotency_key,
            tool_call_id=request.tool_call_id,
            tool=request.tool,
            error_type=command.error_type,
            error=command.error or "",
            latency_ms=command.latency_ms,
        )
    if len(state.pending_tools) > 1:
        return [result]
    # Last outstanding tool call of the step: the model sees all results in the next step.
    after = _apply_payload(state, result)
    if state.step >= state.max_steps:
        return [
            result,
            TaskFailed(
                reason="max_steps",
                error=f"the agent used its {state.max_steps} steps without answering",
                **_totals(after),
            ),
        ]
    return [result, _llm_request(after, state.step + 1)]


# -- evolve ----------------------------------------------------------------------------------

# Facts of the event catalogue that this version of the decider neither emits nor acts on (plans,
# sub-agents, step markers, policy decisions, approvals, budgets): folding one leaves the agent
# loop's state as it was, apart from the sequence and hash chain.
RECORDED_ONLY: frozenset[type[Payload]] = frozenset(
    {
        PlanDecided,
        SubtaskStarted,
        SubtaskCompleted,
        SubtaskFailed,
        AgentStepStarted,
        AgentStepFinished,
        ToolCallAuthorized,
        ToolCallDenied,
        ApprovalRequested,
        ApprovalGranted,
        ApprovalRejected,
        BudgetReserved,
        BudgetThresholdReached,
        BudgetExceeded,
    }
)


def evolve(state: TaskState, event: Event) -> TaskState:
    """The state after ``event``. Already-applied events (at-least-once delivery) leave it unchanged.

    Raises :class:`HistoryError` for an event of another task, a gap in the sequence, or a
    ``prev_hash`` that does not match the previous event's digest.
    """
    envelope = event.envelope
    if state.task_id and envelope.task_id != state.task_id:
        raise HistoryError(
            f"event {envelope.event_id} belongs to task {envelope.task_id}, not {state.task_id}"
        )
    if envelope.sequence <= state.sequence:
        return state
    if envelope.sequence != state.sequence + 1:
        raise HistoryError(
            f"task {envelope.task_id}: expected sequence {state.sequence + 1}, got {envelope.sequence}"
        )
    if envelope.prev_hash != state.last_digest:
        raise HistoryError(
            f"task {envelope.task_id}: event {envelope.sequence} has prev_hash {envelope.prev_hash!r}, "
            f"expected {state.last_digest!r}"
        )
    if isinstance(event.payload, TaskSubmitted):
        state = state.model_copy(
            update={
                "task_id": envelope.task_id,
                "org_id": envelope.org_id,
                "user_id": envelope.user_id,
                "correlation_id": envelope.correlation_id,
            }
        )
    state = _apply_payload(state, event.payload)
    return state.model_copy(
        update={
            "sequence": envelope.sequence,
            "last_event_id": str(envelope.event_id),
            "last_digest": event.digest,
        }
    )


def _apply_payload(state: TaskState, payload: Payload) -> TaskState:
    match payload:
        case TaskSubmitted():
            return state.model_copy(update={"status": Status.SUBMITTED, "query": payload.query})
        case TaskAccepted():
            return state.model_copy(
                update={
                    "status": Status.RUNNING,
                    "max_steps": payload.max_steps,
                    "provider": payload.provider,
                    "model": payload.model,
                    "offline": payload.offline,
                }
            )
        case LlmCallRequested():
            added = tuple(_message(m) for m in json.loads(payload.messages_json))
            return state.model_copy(
                update={
                    "pending_llm": payload,
                    "step": payload.step,
                    "tools": tuple(payload.tools),
                    "messages": (*state.messages, *added),
                }
            )
        case LlmCallCompleted():
            assistant: dict[str, Any] = {"role": "assistant", "content": payload.content}
            calls = json.loads(payload.tool_calls_json)
            if calls:
                assistant["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments_json"]},
                    }
                    for c in calls
                ]
            return state.model_copy(
                update={
                    "pending_llm": None,
                    "messages": (*state.messages, _message(assistant)),
                    "llm_calls": state.llm_calls + 1,
                    "prompt_tokens": state.prompt_tokens + payload.prompt_tokens,
                    "completion_tokens": state.completion_tokens + payload.completion_tokens,
                    "cost_usd": state.cost_usd + payload.cost_usd,
                }
            )
        case LlmCallFailed():
            return state.model_copy(update={"pending_llm": None, "llm_calls": state.llm_calls + 1})
        case ToolCallRequested():
            return state.model_copy(update={"pending_tools": (*state.pending_tools, payload)})
        case ToolCallCompleted() | ToolCallFailed():
            content = payload.output if isinstance(payload, ToolCallCompleted) else f"error: {payload.error}"
            return state.model_copy(
                update={
                    "pending_tools": tuple(
                        t for t in state.pending_tools if t.idempotency_key != payload.idempotency_key
                    ),
                    "messages": (
                        *state.messages,
                        _message({"role": "tool", "tool_call_id": payload.tool_call_id, "content": content}),
                    ),
                    "tool_calls": state.tool_calls + 1,
                }
            )
        case TaskCompleted():
            return state.model_copy(
                update={"status": Status.COMPLETED, "result": payload.result, "pending_tools": ()}
            )
        case TaskFailed() | TaskRejected():
            status = Status.FAILED if isinstance(payload, TaskFailed) else Status.REJECTED
            return state.model_copy(
                update={"status": status, "error": payload.error, "pending_llm": None, "pending_tools": ()}
            )
        case TaskCancelled():
            return state.model_copy(
                update={
                    "status": Status.CANCELLED,
                    "error": f"cancelled by {payload.cancelled_by}: {payload.reason}",
                    "pending_llm": None,
                    "pending_tools": (),
                }
            )
    if type(payload) in RECORDED_ONLY:
        return state
    raise HistoryError(f"no evolve rule for {type(payload).__name__}")


def fold(events: Iterable[Event], state: TaskState | None = None) -> TaskState:
    """Replay: the state after applying ``events`` in order to ``state`` (the initial state by default)."""
    current = state or TaskState()
    for event in events:
        current = evolve(current, event)
    return current
