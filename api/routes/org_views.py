"""Org-wide read models: pending approvals, LLM usage, sessions, dead letters."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AfterDep, CallerDep, OperatorDep, ResourcesDep
from projections.approval_view import ApprovalRow
from projections.dead_letter_view import DeadLetterCursor, DeadLetterEntry
from projections.session_view import SessionIncrement

router = APIRouter(prefix="/v1", tags=["orgs"])


@router.get(
    "/approvals",
    response_model=list[ApprovalRow],
    operation_id="list_pending_approvals",
    summary="The org's tool calls waiting for a human decision, oldest first",
)
async def list_pending_approvals(
    resources: ResourcesDep,
    caller: CallerDep,
    _: AfterDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ApprovalRow]:
    return await resources.queries.pending_approvals(caller.org_id, limit=limit)


class UsageGroup(StrEnum):
    day = "day"
    user = "user"
    model = "model"


class UsageRow(BaseModel):
    """LLM usage of one group. The group's keys are set; the keys not grouped by are null."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "org_id": "acme",
                    "day": "2026-11-22",
                    "user_id": None,
                    "model": "gpt-4o-mini",
                    "prompt_tokens": 1200,
                    "completion_tokens": 300,
                    "total_tokens": 1500,
                    "cost_usd": 0.00036,
                    "calls": 4,
                    "cache_hits": 1,
                    "cache_hit_rate": 0.25,
                }
            ]
        }
    )

    org_id: str
    day: date | None = Field(default=None, description="UTC day the calls ended, when grouped by day.")
    user_id: str | None = Field(default=None, description="Who submitted the tasks, when grouped by user.")
    model: str | None = Field(default=None, description="The model that answered, when grouped by model.")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    calls: int = Field(description="Completed LLM calls (each retry attempt counts).")
    cache_hits: int = Field(description="Calls answered from the exact or semantic cache.")
    cache_hit_rate: float = Field(description="cache_hits / calls (0 without calls).")

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> UsageRow:
        calls = int(row["calls"])
        return cls.model_validate({**row, "cache_hit_rate": int(row["cache_hits"]) / calls if calls else 0.0})


@router.get(
    "/usage",
    response_model=list[UsageRow],
    operation_id="get_usage",
    summary="The org's LLM usage (tokens, cost, calls, cache hits) per UTC day, user and/or model",
    responses={422: {"description": "A bad day range or grouping."}},
)
async def get_usage(
    resources: ResourcesDep,
    caller: CallerDep,
    _: AfterDep,
    first_day: Annotated[
        date | None, Query(alias="from", description="First day (default: 30 days ago).")
    ] = None,
    last_day: Annotated[date | None, Query(alias="to", description="Last day (default: today, UTC).")] = None,
    group_by: Annotated[
        list[UsageGroup] | None,
        Query(
            max_length=3,
            description=(
                "What to sum per (repeatable): `day`, `user`, `model`; default `day`. Rows are ordered"
                " by the keys in the order given."
            ),
            examples=[["model"], ["day", "user"]],
        ),
    ] = None,
) -> list[UsageRow]:
    last = last_day or datetime.now(UTC).date()
    first = first_day or last - timedelta(days=30)
    if first > last:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"from ({first}) is after to ({last})")
    keys = list(dict.fromkeys(group_by or [UsageGroup.day]))
    if keys == [UsageGroup.day]:
        # The per-day totals are kept as their own read model: one row per day, no aggregation.
        daily = await resources.queries.usage(caller.org_id, first, last)
        return [UsageRow.of(row.model_dump()) for row in daily]
    rows = await resources.queries.usage_breakdown(caller.org_id, first, last, [key.value for key in keys])
    return [UsageRow.of(row) for row in rows]


class DeadLetterPage(BaseModel):
    dead_letters: list[DeadLetterEntry] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null when no more.")


@router.get(
    "/dead-letters",
    response_model=DeadLetterPage,
    operation_id="list_dead_letters",
    summary="The org's dead-lettered records, newest first (operators and admins)",
    responses={
        403: {"description": "The caller is a viewer."},
        422: {"description": "A malformed cursor."},
    },
)
async def list_dead_letters(
    resources: ResourcesDep,
    caller: OperatorDep,
    _: AfterDep,
    cursor: Annotated[
        str | None,
        Query(
            max_length=60,
            description="The `next_cursor` of the previous page.",
            examples=["1795376400000000.42"],
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeadLetterPage:
    # Only records whose parked value named the caller's org are listed: one that never decoded
    # names no org and is visible to platform operators only (agentlog CLI), not through the API.
    try:
        before = DeadLetterCursor.parse(cursor) if cursor else None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from exc
    entries = await resources.queries.dead_letters(caller.org_id, before=before, limit=limit)
    next_cursor = DeadLetterCursor.of(entries[-1]).token() if len(entries) == limit else None
    return DeadLetterPage(dead_letters=entries, next_cursor=next_cursor)


@router.get(
    "/sessions/{session_id}",
    response_model=SessionIncrement,
    operation_id="get_session",
    summary="A session's token budget and what its tasks used",
)
async def get_session(
    session_id: str, resources: ResourcesDep, caller: CallerDep, _: AfterDep
) -> SessionIncrement:
    session = await resources.queries.session(session_id)
    if session is None or session.org_id != caller.org_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"session {session_id} not found")
    return session
