"""Org-wide read models: pending approvals, LLM usage per day, sessions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import AfterDep, CallerDep, ResourcesDep
from projections.approval_view import ApprovalRow
from projections.session_view import SessionIncrement
from projections.usage_view import UsageIncrement

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


@router.get(
    "/usage",
    response_model=list[UsageIncrement],
    operation_id="get_usage",
    summary="The org's LLM usage per UTC day: tokens, cost, calls, cache hits",
)
async def get_usage(
    resources: ResourcesDep,
    caller: CallerDep,
    _: AfterDep,
    first_day: Annotated[
        date | None, Query(alias="from", description="First day (default: 30 days ago).")
    ] = None,
    last_day: Annotated[date | None, Query(alias="to", description="Last day (default: today, UTC).")] = None,
) -> list[UsageIncrement]:
    last = last_day or datetime.now(UTC).date()
    first = first_day or last - timedelta(days=30)
    if first > last:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"from ({first}) is after to ({last})")
    return await resources.queries.usage(caller.org_id, first, last)


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
