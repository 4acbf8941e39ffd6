"""``agent_executions``: one row per agent of a task (``main`` and each planned sub-agent).

The main agent has no subtask events: its status follows the task's end.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from projections.rows import Key, RowTable
from schemas.events import (
    MAIN_AGENT,
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    SubtaskCompleted,
    SubtaskFailed,
    SubtaskStarted,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    ToolCallCompleted,
    ToolCallFailed,
)

_TASK_ENDS = (TaskCompleted, TaskFailed, TaskCancelled)
_STATUS_OF = {
    "SubtaskCompleted": "completed",
    "SubtaskFailed": "failed",
    "TaskCompleted": "completed",
    "TaskFailed": "failed",
    "TaskCancelled": "cancelled",
}


class AgentRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    task_id: str
    agent_id: str
    org_id: str
    subtask_id: str | None = None
    provider: str | None = None
    model: str | None = None
    model_sequence: int = -1
    status: str = "running"
    status_sequence: int = -1
    error: str | None = None
    llm_calls: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    started_at: datetime | None = None
    ended_at: datetime | None = None


def key_of(event: Event) -> Key | None:
    payload = event.payload
    if isinstance(payload, _TASK_ENDS):
        return (event.task_id, MAIN_AGENT)
    agent_id = getattr(payload, "agent_id", None)
    return (event.task_id, agent_id) if isinstance(agent_id, str) else None


def new_row(event: Event) -> AgentRow:
    key = key_of(event)
    assert key is not None, event.event_type
    return AgentRow(task_id=event.task_id, agent_id=key[1], org_id=event.envelope.org_id)


def apply(row: AgentRow, event: Event) -> AgentRow:
    """The row after ``event``: sums and min/max times commute; model and status follow the
    highest sequence that set them."""
    at = event.envelope.occurred_at
    payload = event.payload
    update: dict[str, object] = {}
    if not isinstance(payload, _TASK_ENDS):
        update["started_at"] = min(row.started_at, at) if row.started_at else at
    status = _STATUS_OF.get(event.event_type)
    if status is not None:
        update["ended_at"] = max(row.ended_at, at) if row.ended_at else at
        if event.sequence > row.status_sequence:
            update |= {"status": status, "status_sequence": event.sequence}
            if isinstance(payload, SubtaskFailed):
                update["error"] = payload.error
            elif isinstance(payload, TaskFailed):
                update["error"] = f"{payload.reason}: {payload.error}"
    match payload:
        case SubtaskStarted():
            update["subtask_id"] = payload.subtask_id
        case SubtaskCompleted() | SubtaskFailed():
            update["subtask_id"] = payload.subtask_id
        case LlmCallRequested() | LlmCallCompleted() if event.sequence > row.model_sequence:
            update |= {"provider": payload.provider, "model": payload.model, "model_sequence": event.sequence}
    match payload:
        case LlmCallCompleted():
            update |= {
                "llm_calls": row.llm_calls + 1,
                "prompt_tokens": row.prompt_tokens + payload.prompt_tokens,
                "completion_tokens": row.completion_tokens + payload.completion_tokens,
                "total_tokens": row.total_tokens + payload.total_tokens,
                "cost_usd": row.cost_usd + payload.cost_usd,
            }
        case LlmCallFailed():
            update["llm_calls"] = row.llm_calls + 1
        case ToolCallCompleted() | ToolCallFailed():
            update["tool_calls"] = row.tool_calls + 1
    return row.model_copy(update=update)


AGENT_EXECUTIONS = RowTable(
    name="agent_executions",
    key_columns=(("task_id", "text"), ("agent_id", "text")),
    row_type=AgentRow,
    key_of=key_of,
    new_row=new_row,
    apply=apply,
)
