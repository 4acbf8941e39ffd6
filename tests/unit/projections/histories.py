"""Event histories for the read-model tests, built directly (the views read only events)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from schemas.events import (
    ApprovalGranted,
    ApprovalRequested,
    Envelope,
    Event,
    ExecutionMode,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    Payload,
    SubtaskCompleted,
    SubtaskStarted,
    TaskAccepted,
    TaskCompleted,
    TaskSubmitted,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallFailed,
    ToolCallRequested,
)

START = datetime(2026, 3, 1, 23, 59, 55, tzinfo=UTC)


def sealed(
    task_id: str, payloads: list[Payload], *, org_id: str = "acme", start: datetime = START
) -> list[Event]:
    """``payloads`` as the task's events, one second apart, sequences from 0."""
    return [
        Event(
            envelope=Envelope(
                event_id=uuid.uuid4(),
                task_id=task_id,
                org_id=org_id,
                user_id="alice",
                sequence=sequence,
                occurred_at=start + timedelta(seconds=sequence),
                correlation_id=task_id,
                producer="test",
                producer_version="0",
            ),
            payload=payload,
            digest=f"d{sequence}",
        )
        for sequence, payload in enumerate(payloads)
    ]


def llm_requested(
    key: str, *, agent_id: str = "main", attempt: int = 1, model: str = "m1"
) -> LlmCallRequested:
    return LlmCallRequested(
        step=1,
        agent_id=agent_id,
        idempotency_key=key,
        provider="p",
        model=model,
        messages_json="[]",
        attempt=attempt,
    )


def llm_completed(
    key: str,
    tokens: tuple[int, int],
    cost: float,
    *,
    agent_id: str = "main",
    attempt: int = 1,
    cache_hit: bool = False,
) -> LlmCallCompleted:
    return LlmCallCompleted(
        step=1,
        agent_id=agent_id,
        idempotency_key=key,
        provider="p",
        model="m2",
        finish_reason="stop",
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        total_tokens=sum(tokens),
        cost_usd=cost,
        latency_ms=12.5,
        cache_hit=cache_hit,
        attempt=attempt,
        offline=True,
        response_json="{}",
    )


def tool(cls: type[Payload], **fields: object) -> Payload:
    common = {
        "step": 1,
        "agent_id": "main",
        "idempotency_key": "t1",
        "tool_call_id": "c1",
        "tool": "calculator",
    }
    return cls(**common, **fields)


def planned_task(
    task_id: str = "task-1", *, session_id: str | None = "s1", org_id: str = "acme"
) -> list[Event]:
    """A submitted, planned task: the main agent calls a tool behind an approval (failing once);
    sub-agent ``a1`` fails one LLM attempt and answers on the second; the task completes.

    Costs are binary fractions so that sums are exact in any order."""
    return sealed(
        task_id,
        [
            TaskSubmitted(query="q", session_id=session_id, token_budget=1000),
            TaskAccepted(
                execution_mode=ExecutionMode.COMPLEX, max_steps=4, provider="p", model="m1", offline=True
            ),
            llm_requested("l1"),
            llm_completed("l1", (10, 5), 0.25, cache_hit=True),
            tool(ToolCallRequested, arguments_json='{"expression": "1+1"}'),
            ApprovalRequested(
                approval_id=f"ap-{task_id}",
                step=1,
                idempotency_key="t1",
                tool_call_id="c1",
                tool="calculator",
                arguments_json='{"expression": "1+1"}',
                rule="ask",
                reason="needs a human",
            ),
            ApprovalGranted(approval_id=f"ap-{task_id}", decided_by="bob", reason="fine"),
            tool(ToolCallAuthorized, rule="ask", approval_id=f"ap-{task_id}"),
            tool(
                ToolCallFailed,
                error_type="Timeout",
                error="slow",
                latency_ms=100.0,
                attempt=1,
                retryable=True,
            ),
            tool(ToolCallCompleted, output="2", latency_ms=3.0),
            SubtaskStarted(subtask_id="st1", agent_id="a1"),
            llm_requested("l2", agent_id="a1"),
            LlmCallFailed(
                step=1,
                agent_id="a1",
                idempotency_key="l2",
                provider="p",
                model="m1",
                error_type="E",
                error="boom",
                latency_ms=1.0,
            ),
            llm_requested("l2", agent_id="a1", attempt=2),
            llm_completed("l2", (20, 8), 0.5, agent_id="a1", attempt=2),
            SubtaskCompleted(subtask_id="st1", agent_id="a1", result="2"),
            llm_completed("l3", (4, 4), 0.125),
            TaskCompleted(
                result="2",
                steps=2,
                llm_calls=4,
                tool_calls=2,
                prompt_tokens=34,
                completion_tokens=17,
                total_tokens=51,
                cost_usd=0.875,
            ),
        ],
        org_id=org_id,
    )
