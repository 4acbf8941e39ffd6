"""``approvals``: one row per approval, pending until a decision is recorded."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from projections.rows import Key, RowTable
from schemas.events import ApprovalGranted, ApprovalRejected, ApprovalRequested, Event

_APPROVAL_EVENTS = (ApprovalRequested, ApprovalGranted, ApprovalRejected)


class ApprovalRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    approval_id: str
    task_id: str
    org_id: str
    agent_id: str | None = None
    idempotency_key: str | None = None
    tool_call_id: str | None = None
    tool: str | None = None
    arguments_json: str | None = None
    rule: str | None = None
    reason: str | None = None
    status: str = "pending"
    decided_by: str | None = None
    decision_reason: str | None = None
    requested_at: datetime | None = None
    decided_at: datetime | None = None


def key_of(event: Event) -> Key | None:
    payload = event.payload
    if isinstance(payload, _APPROVAL_EVENTS):
        return (payload.approval_id,)
    return None


def new_row(event: Event) -> ApprovalRow:
    payload = event.payload
    assert isinstance(payload, _APPROVAL_EVENTS), event.event_type
    return ApprovalRow(approval_id=payload.approval_id, task_id=event.task_id, org_id=event.envelope.org_id)


def apply(row: ApprovalRow, event: Event) -> ApprovalRow:
    """The row after ``event``; the request never resets a decision already recorded."""
    at = event.envelope.occurred_at
    payload = event.payload
    match payload:
        case ApprovalRequested():
            return row.model_copy(
                update={
                    "agent_id": payload.agent_id,
                    "idempotency_key": payload.idempotency_key,
                    "tool_call_id": payload.tool_call_id,
                    "tool": payload.tool,
                    "arguments_json": payload.arguments_json,
                    "rule": payload.rule,
                    "reason": payload.reason,
                    "requested_at": at,
                }
            )
        case ApprovalGranted() | ApprovalRejected():
            return row.model_copy(
                update={
                    "status": "granted" if isinstance(payload, ApprovalGranted) else "rejected",
                    "decided_by": payload.decided_by,
                    "decision_reason": payload.reason,
                    "decided_at": at,
                }
            )
    return row


APPROVALS = RowTable(
    name="approvals",
    key_columns=(("approval_id", "text"),),
    row_type=ApprovalRow,
    key_of=key_of,
    new_row=new_row,
    apply=apply,
)
