"""``tool_calls``: one row per tool call, from its request, policy decision, approval and outcome."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from projections.rows import Key, RowTable
from schemas.events import (
    ApprovalRequested,
    Event,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallDenied,
    ToolCallFailed,
    ToolCallRequested,
)

_TOOL_EVENTS = (
    ToolCallRequested,
    ToolCallAuthorized,
    ToolCallDenied,
    ToolCallCompleted,
    ToolCallFailed,
    ApprovalRequested,
)
_STATUS_OF = {
    "ToolCallRequested": "requested",
    "ApprovalRequested": "awaiting_approval",
    "ToolCallAuthorized": "authorized",
    "ToolCallDenied": "denied",
    "ToolCallFailed": "failed",
    "ToolCallCompleted": "completed",
}


class ToolCallRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    task_id: str
    idempotency_key: str
    org_id: str
    agent_id: str
    step: int
    tool_call_id: str
    tool: str
    arguments_json: str | None = None
    rule: str | None = None
    decision: str | None = None
    denial_reason: str | None = None
    approval_id: str | None = None
    status: str = "requested"
    status_sequence: int = -1
    output: str | None = None
    truncated: bool = False
    quarantined: bool = False
    findings: list[str] = []
    error_type: str | None = None
    error: str | None = None
    error_attempt: int = 0
    attempts: int = 0
    latency_ms: float | None = None
    requested_at: datetime | None = None
    ended_at: datetime | None = None


def key_of(event: Event) -> Key | None:
    payload = event.payload
    if isinstance(payload, _TOOL_EVENTS):
        return (event.task_id, payload.idempotency_key)
    return None


def new_row(event: Event) -> ToolCallRow:
    payload = event.payload
    assert isinstance(payload, _TOOL_EVENTS), event.event_type
    return ToolCallRow(
        task_id=event.task_id,
        idempotency_key=payload.idempotency_key,
        org_id=event.envelope.org_id,
        agent_id=payload.agent_id,
        step=payload.step,
        tool_call_id=payload.tool_call_id,
        tool=payload.tool,
    )


def apply(row: ToolCallRow, event: Event) -> ToolCallRow:
    """The row after ``event``. Status follows the highest sequence; a denial outranks an
    authorization; a failure's details are those of its highest attempt."""
    at = event.envelope.occurred_at
    payload = event.payload
    update: dict[str, object] = {}
    status = _STATUS_OF.get(event.event_type)
    if status is not None and event.sequence > row.status_sequence:
        update |= {"status": status, "status_sequence": event.sequence}
    match payload:
        case ToolCallRequested():
            update |= {"arguments_json": payload.arguments_json, "requested_at": at}
        case ApprovalRequested():
            update |= {"approval_id": payload.approval_id, "arguments_json": payload.arguments_json}
        case ToolCallAuthorized():
            if row.decision != "denied":
                update |= {"decision": "allowed", "rule": payload.rule}
            if payload.approval_id:
                update["approval_id"] = payload.approval_id
        case ToolCallDenied():
            update |= {
                "decision": "denied",
                "rule": payload.rule,
                "denial_reason": payload.reason,
                "ended_at": _latest(row.ended_at, at),
            }
            if payload.approval_id:
                update["approval_id"] = payload.approval_id
        case ToolCallCompleted():
            update |= {
                "output": payload.output,
                "truncated": payload.truncated,
                "quarantined": payload.quarantined,
                "findings": list(payload.findings),
                "latency_ms": payload.latency_ms,
                "attempts": row.attempts + 1,
                "ended_at": _latest(row.ended_at, at),
            }
        case ToolCallFailed():
            update |= {"attempts": row.attempts + 1, "ended_at": _latest(row.ended_at, at)}
            if payload.attempt > row.error_attempt:
                update |= {
                    "error_type": payload.error_type,
                    "error": payload.error,
                    "error_attempt": payload.attempt,
                }
                if row.output is None:  # a completion's latency is the call's
                    update["latency_ms"] = payload.latency_ms
    return row.model_copy(update=update)


def _latest(current: datetime | None, at: datetime) -> datetime:
    return max(current, at) if current else at


TOOL_CALLS = RowTable(
    name="tool_calls",
    key_columns=(("task_id", "text"), ("idempotency_key", "text")),
    row_type=ToolCallRow,
    key_of=key_of,
    new_row=new_row,
    apply=apply,
)
