"""``llm_calls``: one row per attempt of an LLM call, from its request and its outcome."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from projections.rows import Key, RowTable
from schemas.events import Event, LlmCallCompleted, LlmCallFailed, LlmCallRequested

_LLM_EVENTS = (LlmCallRequested, LlmCallCompleted, LlmCallFailed)


class LlmCallRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    task_id: str
    idempotency_key: str
    attempt: int
    org_id: str
    agent_id: str
    step: int
    provider: str
    model: str
    tier: str
    status: str = "requested"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    cache_hit: bool = False
    cache_kind: str | None = None
    finish_reason: str | None = None
    error_type: str | None = None
    error: str | None = None
    requested_at: datetime | None = None
    ended_at: datetime | None = None


def key_of(event: Event) -> Key | None:
    payload = event.payload
    if isinstance(payload, _LLM_EVENTS):
        return (event.task_id, payload.idempotency_key, payload.attempt)
    return None


def new_row(event: Event) -> LlmCallRow:
    payload = event.payload
    assert isinstance(payload, _LLM_EVENTS), event.event_type
    return LlmCallRow(
        task_id=event.task_id,
        idempotency_key=payload.idempotency_key,
        attempt=payload.attempt,
        org_id=event.envelope.org_id,
        agent_id=payload.agent_id,
        step=payload.step,
        provider=payload.provider,
        model=payload.model,
        tier=payload.tier.value,
    )


def apply(row: LlmCallRow, event: Event) -> LlmCallRow:
    """The row after ``event``; the request never changes the status an outcome has set."""
    at = event.envelope.occurred_at
    payload = event.payload
    match payload:
        case LlmCallRequested():
            return row.model_copy(update={"requested_at": at})
        case LlmCallCompleted():
            return row.model_copy(
                update={
                    "status": "completed",
                    # The answering model may differ from the requested one (fallback).
                    "provider": payload.provider,
                    "model": payload.model,
                    "prompt_tokens": payload.prompt_tokens,
                    "completion_tokens": payload.completion_tokens,
                    "total_tokens": payload.total_tokens,
                    "cost_usd": payload.cost_usd,
                    "latency_ms": payload.latency_ms,
                    "cache_hit": payload.cache_hit,
                    "cache_kind": payload.cache_kind.value if payload.cache_kind else None,
                    "finish_reason": payload.finish_reason,
                    "ended_at": at,
                }
            )
        case LlmCallFailed():
            return row.model_copy(
                update={
                    "status": "failed",
                    "latency_ms": payload.latency_ms,
                    "error_type": payload.error_type,
                    "error": payload.error,
                    "ended_at": at,
                }
            )
    return row


LLM_CALLS = RowTable(
    name="llm_calls",
    key_columns=(("task_id", "text"), ("idempotency_key", "text"), ("attempt", "integer")),
    row_type=LlmCallRow,
    key_of=key_of,
    new_row=new_row,
    apply=apply,
)
