"""A task's timeline as rows (for the rich table and ``--json``)."""

from __future__ import annotations

import json
from typing import Any

from schemas.events import (
    Event,
    LlmCallCompleted,
    LlmCallRequested,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    ToolCallCompleted,
    ToolCallFailed,
    ToolCallRequested,
)


def _detail(event: Event) -> str:
    payload = event.payload
    match payload:
        case TaskSubmitted():
            return payload.query
        case LlmCallRequested():
            return f"{len(json.loads(payload.messages_json))} messages, tools={payload.tools}"
        case LlmCallCompleted():
            calls = [c["name"] for c in json.loads(payload.tool_calls_json)]
            return f"tool calls {calls}" if calls else (payload.content or "")
        case ToolCallRequested():
            return payload.arguments_json
        case ToolCallCompleted():
            return payload.output
        case ToolCallFailed():
            return f"{payload.error_type}: {payload.error}"
        case TaskCompleted():
            return payload.result
        case TaskFailed():
            return f"{payload.reason}: {payload.error}"
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
