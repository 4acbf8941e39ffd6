"""Two runs of a task side by side (e.g. a task and its fork): steps, outputs, tokens, cost (pure).

Rows are aligned by sequence: a fork's copied prefix lines up with its source event for event, and
``first_difference`` is where the histories part (for a fork, its ``TaskForked``). Two payloads
are the same when they are equal field for field; envelopes (ids, times, hash chain) always differ.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import BaseModel, Field

from schemas.events import (
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskForked,
    TaskRejected,
    TaskSubmitted,
    ToolCallCompleted,
    ToolCallDenied,
    ToolCallFailed,
    ToolCallRequested,
)

DETAIL_CHARS = 160


class RunSummary(BaseModel):
    """One run's totals, computed from its events."""

    task_id: str
    status: str
    events: int
    steps: int = Field(description="Distinct agent steps that asked the model.")
    llm_calls: int
    tool_calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    models: list[str] = Field(description="Models that answered, in order of first use.")
    result: str | None = None
    error: str | None = None
    forked_from: str | None = None
    forked_at: int | None = None


class CompareRow(BaseModel):
    sequence: int
    a_type: str | None
    a_detail: str | None
    b_type: str | None
    b_detail: str | None
    same: bool = Field(description="Both runs have this event with equal payloads.")


class Comparison(BaseModel):
    a: RunSummary
    b: RunSummary
    first_difference: int | None = Field(description="First sequence whose events differ; null if none.")
    branch: str = Field(description="How the runs are related, in words.")
    rows: list[CompareRow]


def summarize(events: Sequence[Event]) -> RunSummary:
    status, result, error = "running", None, None
    steps: set[tuple[str, int]] = set()
    models: list[str] = []
    llm_calls = tool_calls = prompt = completion = 0
    cost = 0.0
    forked_from, forked_at = None, None
    for event in events:
        payload = event.payload
        match payload:
            case TaskSubmitted():
                status = "submitted"
            case LlmCallRequested():
                steps.add((payload.agent_id, payload.step))
                status = "running"
            case LlmCallCompleted():
                llm_calls += 1
                prompt += payload.prompt_tokens
                completion += payload.completion_tokens
                cost += payload.cost_usd
                if payload.model not in models:
                    models.append(payload.model)
            case LlmCallFailed():
                llm_calls += 1
            case ToolCallCompleted() | ToolCallFailed():
                tool_calls += 1
            case TaskForked():
                forked_from, forked_at = payload.source_task_id, payload.prefix_events
            case TaskCompleted():
                status, result = "completed", payload.result
            case TaskFailed() | TaskRejected():
                status = "failed" if isinstance(payload, TaskFailed) else "rejected"
                error = f"{payload.reason}: {payload.error}"
            case TaskCancelled():
                status, error = "cancelled", f"cancelled by {payload.cancelled_by}: {payload.reason}"
    return RunSummary(
        task_id=events[0].task_id if events else "",
        status=status,
        events=len(events),
        steps=len(steps),
        llm_calls=llm_calls,
        tool_calls=tool_calls,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=round(cost, 9),
        models=models,
        result=result,
        error=error,
        forked_from=forked_from,
        forked_at=forked_at,
    )


def detail(event: Event) -> str:
    """A short description of what the event says (its output, tool, model or change)."""
    payload = event.payload
    match payload:
        case TaskSubmitted():
            text = payload.query
        case LlmCallRequested():
            text = f"{payload.agent_id} step {payload.step}: {payload.model}"
        case LlmCallCompleted():
            calls = [c["name"] for c in json.loads(payload.tool_calls_json)]
            text = f"{payload.model} {payload.total_tokens} tok: " + (
                f"tool calls {calls}" if calls else (payload.content or "")
            )
        case ToolCallRequested():
            text = f"{payload.tool} {payload.arguments_json}"
        case ToolCallCompleted():
            text = f"{payload.tool}: {payload.output}"
        case ToolCallFailed() | LlmCallFailed():
            text = f"{payload.error_type}: {payload.error}"
        case ToolCallDenied():
            text = f"{payload.tool} denied: {payload.reason}"
        case TaskForked():
            changes = [f"model={payload.model}"] if payload.model else []
            changes += ["input changed"] if payload.input is not None else []
            changes += [f"{k}={v}" for k, v in sorted(payload.overrides.items())]
            text = (
                f"forked from {payload.source_task_id} at {payload.prefix_events}"
                f" ({', '.join(changes) or 'no changes'})"
            )
        case TaskCompleted():
            text = payload.result
        case TaskFailed() | TaskRejected():
            text = f"{payload.reason}: {payload.error}"
        case TaskCancelled():
            text = f"cancelled by {payload.cancelled_by}: {payload.reason}"
        case _:
            text = ""
    return text[:DETAIL_CHARS]


def compare(a: Sequence[Event], b: Sequence[Event]) -> Comparison:
    """``a`` and ``b`` (each a task's events in sequence order) side by side."""
    rows: list[CompareRow] = []
    first_difference: int | None = None
    for sequence in range(max(len(a), len(b))):
        left = a[sequence] if sequence < len(a) else None
        right = b[sequence] if sequence < len(b) else None
        same = (
            left is not None
            and right is not None
            and type(left.payload) is type(right.payload)
            and left.payload.model_dump() == right.payload.model_dump()
        )
        if not same and first_difference is None:
            first_difference = sequence
        rows.append(
            CompareRow(
                sequence=sequence,
                a_type=left.event_type if left else None,
                a_detail=detail(left) if left else None,
                b_type=right.event_type if right else None,
                b_detail=detail(right) if right else None,
                same=same,
            )
        )
    summary_a, summary_b = summarize(a), summarize(b)
    return Comparison(
        a=summary_a,
        b=summary_b,
        first_difference=first_difference,
        branch=_branch(summary_a, summary_b, first_difference),
        rows=rows,
    )


def _branch(a: RunSummary, b: RunSummary, first_difference: int | None) -> str:
    for fork, source in ((b, a), (a, b)):
        if fork.forked_from == source.task_id:
            return f"{fork.task_id} is a fork of {source.task_id} at {fork.forked_at}"
    if first_difference is None:
        return "the histories have equal payloads throughout"
    return f"the histories first differ at sequence {first_difference}"
