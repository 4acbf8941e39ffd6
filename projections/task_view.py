"""The task read model as a pure function of the task's events.

Events of one task arrive from two topics (the submission on the requests topic, the rest on the
events topic), so the order between them is not guaranteed. ``apply`` is therefore written to give
the same view in any order, provided each event is applied once (the writer dedupes by
(task id, sequence)): status follows the highest sequence seen; everything else is set by the one
event that carries it.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from processors.task.history import is_copy
from schemas.events import (
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    Payload,
    TaskAccepted,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskRejected,
    TaskSubmitted,
    ToolCallCompleted,
    ToolCallFailed,
)

_STATUS_OF = {
    "TaskSubmitted": "submitted",
    "TaskAccepted": "running",
    "TaskCompleted": "completed",
    "TaskFailed": "failed",
    "TaskCancelled": "cancelled",
    "TaskRejected": "rejected",
}
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "rejected"})


class TaskView(BaseModel):
    """One row of ``task_executions``."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    org_id: str
    user_id: str
    status: str = "submitted"
    status_sequence: int = -1
    session_id: str | None = None
    query: str | None = None
    priority: str | None = None
    execution_mode: str | None = None
    provider: str | None = None
    model: str | None = None
    offline: bool | None = None
    result: str | None = None
    error: str | None = None
    steps: int = 0
    llm_calls: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    token_budget: int | None = None
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    last_sequence: int = -1
    event_count: int = 0
    updated_at: datetime | None = None


class TaskFilter(BaseModel):
    """Which of an org's tasks a listing returns; ``before`` is the keyset cursor (the last listed
    task's ``(submitted_at, task_id)``)."""

    model_config = ConfigDict(frozen=True)

    org_id: str
    status: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    execution_mode: str | None = None
    submitted_from: datetime | None = None
    submitted_to: datetime | None = None
    before: tuple[datetime, str] | None = None


_ACCOUNTED = (LlmCallCompleted, LlmCallFailed, ToolCallCompleted, ToolCallFailed)


def new_view(event: Event) -> TaskView:
    return TaskView(task_id=event.task_id, org_id=event.envelope.org_id, user_id=event.envelope.user_id)


def apply(view: TaskView, event: Event) -> TaskView:
    """The view after ``event`` (which must not have been applied to ``view`` before)."""
    at = event.envelope.occurred_at
    update: dict[str, object] = {
        "last_sequence": max(view.last_sequence, event.sequence),
        "event_count": view.event_count + 1,
        "updated_at": max(view.updated_at, at) if view.updated_at else at,
    }
    status = _STATUS_OF.get(event.event_type)
    if status is not None and event.sequence > view.status_sequence:
        update |= {"status": status, "status_sequence": event.sequence}
    payload: Payload | None = event.payload
    if is_copy(event) and isinstance(payload, _ACCOUNTED):
        # A fork's copy of its source's call: the fork's totals are what the fork itself spent (the
        # source's row has the rest), so org usage and session totals count each call once.
        payload = None
    match payload:
        case TaskSubmitted():
            update |= {
                "query": payload.query,
                "priority": payload.priority.value,
                "session_id": payload.session_id,
                "token_budget": payload.token_budget,
                "submitted_at": at,
            }
        case TaskAccepted():
            update |= {
                "execution_mode": payload.execution_mode.value.lower(),
                "provider": payload.provider,
                "model": payload.model,
                "offline": payload.offline,
            }
        case LlmCallCompleted():
            update |= {
                "llm_calls": view.llm_calls + 1,
                "steps": max(view.steps, payload.step),
                "prompt_tokens": view.prompt_tokens + payload.prompt_tokens,
                "completion_tokens": view.completion_tokens + payload.completion_tokens,
                "total_tokens": view.total_tokens + payload.total_tokens,
                "cost_usd": view.cost_usd + payload.cost_usd,
            }
        case LlmCallFailed():
            update |= {"llm_calls": view.llm_calls + 1, "steps": max(view.steps, payload.step)}
        case ToolCallCompleted() | ToolCallFailed():
            update |= {"tool_calls": view.tool_calls + 1}
        case TaskCompleted() | TaskFailed() | TaskCancelled() | TaskRejected():
            update |= {"completed_at": at}
            match payload:
                case TaskCompleted():
                    update["result"] = payload.result
                case TaskCancelled():
                    update["error"] = f"cancelled by {payload.cancelled_by}: {payload.reason}"
                case _:
                    update["error"] = f"{payload.reason}: {payload.error}"
    merged = view.model_copy(update=update)
    if merged.submitted_at and merged.completed_at:
        elapsed = merged.completed_at - merged.submitted_at
        merged = merged.model_copy(update={"duration_ms": int(elapsed.total_seconds() * 1000)})
    return merged
