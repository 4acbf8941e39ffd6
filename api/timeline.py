"""A task's timeline as rows (for the rich table and ``--json``)."""

from __future__ import annotations

import json
from typing import Any

from schemas.events import (
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    BudgetExceeded,
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    PlanDecided,
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


def _detail(event: Event) -> str:
    payload = event.payload
    match payload:
        case TaskSubmitted():
            return payload.query
        case TaskAccepted():
            return f"{payload.execution_mode.value.lower()} (complexity {payload.complexity:.2f})"
        case LlmCallRequested():
            added = len(json.loads(payload.messages_json))
            return f"prompt of {payload.prompt_messages} messages (+{added}), {len(payload.tools)} tools"
        case LlmCallCompleted():
            calls = [c["name"] for c in json.loads(payload.tool_calls_json)]
            cached = f"[cache {payload.cache_kind.value.lower()}] " if payload.cache_kind else ""
            return cached + (f"tool calls {calls}" if calls else (payload.content or ""))
        case ToolCallRequested() | ApprovalRequested():
            return payload.arguments_json
        case ToolCallAuthorized():
            return f"allowed by {payload.rule}"
        case ToolCallDenied():
            return f"denied by {payload.rule}: {payload.reason}"
        case ToolCallCompleted():
            return ("[quarantined] " if payload.quarantined else "") + payload.output
        case ToolCallFailed() | LlmCallFailed():
            return f"{payload.error_type}: {payload.error}"
        case ApprovalGranted() | ApprovalRejected():
            return f"{payload.decided_by}: {payload.reason}"
        case PlanDecided():
            return ", ".join(s.subtask_id for s in payload.subtasks)
        case BudgetExceeded():
            return f"{payload.scope.value} {payload.scope_id}: {payload.action}"
        case TaskCompleted():
            return payload.result
        case TaskFailed() | TaskRejected():
            return f"{payload.reason}: {payload.error}"
        case TaskCancelled():
            return f"cancelled by {payload.cancelled_by}: {payload.reason}"
    return ""


def timeline_rows(events: list[Event]) -> list[dict[str, Any]]:
    """One row per event: sequence, type, step, model/tool, tokens, latency and time since previous."""
    rows = []
    previous = None
    for event in events:
        payload = event.payload
        at = event.envelope.occurred_at
        rows.append(
            {
                "sequence": event.sequence,
                "event_type": event.event_type,
                "event_id": str(event.envelope.event_id),
                "occurred_at": at.isoformat(),
                "since_previous_ms": round((at - previous).total_seconds() * 1000, 1) if previous else None,
                "step": getattr(payload, "step", None),
                "model": getattr(payload, "model", None),
                "tool": getattr(payload, "tool", None),
                "tokens": getattr(payload, "total_tokens", None),
                "latency_ms": round(payload.latency_ms, 1) if hasattr(payload, "latency_ms") else None,
                "offline": getattr(payload, "offline", None),
                "producer": event.envelope.producer,
                "detail": _detail(event),
                "digest": event.digest,
                "prev_hash": event.envelope.prev_hash,
            }
        )
        previous = at
    return rows
