"""``usage_daily``: LLM usage per org per UTC day, as increments to add to the stored counters.

Increments (not rows) because one row gathers the calls of many tasks, written by concurrent
batches; adding is exact as long as each event is counted once, which the writer guarantees by
passing only events it has not applied before.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date

from pydantic import BaseModel, ConfigDict

from processors.task.history import is_copy
from schemas.events import Event, LlmCallCompleted


class UsageIncrement(BaseModel):
    """What to add to a ``usage_daily`` row; also the shape of the stored row (the running totals)."""

    model_config = ConfigDict(frozen=True)

    org_id: str
    day: date
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    cache_hits: int = 0


def usage_increments(events: Iterable[Event]) -> list[UsageIncrement]:
    """One increment per (org, day) of the completed LLM calls among ``events``, sorted by key (so
    concurrent writers lock rows in the same order)."""
    totals: dict[tuple[str, date], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for event in events:
        payload = event.payload
        if not isinstance(payload, LlmCallCompleted) or is_copy(event):
            continue  # a fork's copy of a call: it was made, and is counted, in the source task
        key = (event.envelope.org_id, event.envelope.occurred_at.astimezone(UTC).date())
        counters = totals[key]
        counters["prompt_tokens"] += payload.prompt_tokens
        counters["completion_tokens"] += payload.completion_tokens
        counters["total_tokens"] += payload.total_tokens
        counters["cost_usd"] += payload.cost_usd
        counters["calls"] += 1
        counters["cache_hits"] += int(payload.cache_hit)
    return [
        UsageIncrement(
            org_id=org_id,
            day=day,
            prompt_tokens=int(c["prompt_tokens"]),
            completion_tokens=int(c["completion_tokens"]),
            total_tokens=int(c["total_tokens"]),
            cost_usd=c["cost_usd"],
            calls=int(c["calls"]),
            cache_hits=int(c["cache_hits"]),
        )
        for (org_id, day), c in sorted(totals.items())
    ]
