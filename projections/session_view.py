"""``sessions``: token budget and usage per session, as increments derived from task views.

A task's session is known only once its submission is applied (it may arrive after the task's
other events), so a session's increment is taken from the change of each task's view in a batch:
the whole view when the session first appears on it, the difference otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from projections.task_view import TaskView

_Ordered = TypeVar("_Ordered", int, datetime)


class SessionIncrement(BaseModel):
    """What to add to a ``sessions`` row; also the shape of the stored row (the running totals)."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    org_id: str
    token_budget: int | None = None
    tokens_used: int = 0
    cost_usd: float = 0.0
    task_count: int = 0
    first_task_at: datetime | None = None
    last_task_at: datetime | None = None


def session_increments(changes: Iterable[tuple[TaskView | None, TaskView]]) -> list[SessionIncrement]:
    """One increment per session touched by the (before, after) task views, sorted by session."""
    merged: dict[str, SessionIncrement] = {}
    for before, after in changes:
        if after.session_id is None:
            continue
        new = before is None or before.session_id is None
        base_tokens = 0 if new or before is None else before.total_tokens
        base_cost = 0.0 if new or before is None else before.cost_usd
        increment = SessionIncrement(
            session_id=after.session_id,
            org_id=after.org_id,
            token_budget=after.token_budget,
            tokens_used=after.total_tokens - base_tokens,
            cost_usd=after.cost_usd - base_cost,
            task_count=int(new),
            first_task_at=after.submitted_at if new else None,
            last_task_at=after.submitted_at if new else None,
        )
        previous = merged.get(after.session_id)
        merged[after.session_id] = _combine(previous, increment) if previous else increment
    return [merged[session_id] for session_id in sorted(merged)]


def _combine(a: SessionIncrement, b: SessionIncrement) -> SessionIncrement:
    return a.model_copy(
        update={
            "token_budget": _max(a.token_budget, b.token_budget),
            "tokens_used": a.tokens_used + b.tokens_used,
            "cost_usd": a.cost_usd + b.cost_usd,
            "task_count": a.task_count + b.task_count,
            "first_task_at": _min(a.first_task_at, b.first_task_at),
            "last_task_at": _max(a.last_task_at, b.last_task_at),
        }
    )


def _max(a: _Ordered | None, b: _Ordered | None) -> _Ordered | None:
    return b if a is None else a if b is None else max(a, b)


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)
