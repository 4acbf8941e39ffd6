"""The Postgres read models of calls, tools, approvals, agents, daily usage and sessions.

Two ways in: the projector fed a known history directly (in mixed-up, overlapping batches), and a
planned task run end to end through the REST API, whose rows are checked against its events on
the log and then re-projected to show that redelivery changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

from psycopg_pool import AsyncConnectionPool

from projections.agent_view import AGENT_EXECUTIONS
from projections.approval_view import APPROVALS
from projections.llm_call_view import LLM_CALLS
from projections.migrate import migrate
from projections.postgres import TaskProjector, TaskQueries
from projections.rows import RowTable, fold_rows
from projections.tool_call_view import TOOL_CALLS
from schemas.codec import EventCodec
from schemas.events import Event, LlmCallCompleted, LlmCallFailed, LlmCallRequested, ToolCallRequested
from schemas.registry.client import RegistryClient
from streams.consumer import Decoded
from streams.history import read_task_events
from streams.settings import Settings
from tests.integration.conftest import pg_rows, submit_and_wait
from tests.unit.projections.histories import planned_task

PLANNED_QUERY = "What is 12 * 7? What is 100 / 4? Then summarise both results."
TABLES: list[RowTable[Any]] = [LLM_CALLS, TOOL_CALLS, APPROVALS, AGENT_EXECUTIONS]
WHERE_TASK = {"approvals": "task_id = %s"}
USAGE = "SELECT * FROM usage_daily WHERE org_id = %s ORDER BY day"


async def project(settings: Settings, batches: Sequence[Sequence[Event]]) -> None:
    """Feeds ``batches`` to a Postgres projector as the consumer would (offsets left alone)."""
    async with AsyncConnectionPool(settings.postgres_dsn, min_size=1, max_size=1, open=False) as pool:
        projector = TaskProjector(pool)
        for batch in batches:
            await projector.write([Decoded(e, "read-model-test", 0, e.sequence) for e in batch], {})


async def logged_history(settings: Settings, task_id: str) -> list[Event]:
    """The task's events as on the log."""
    registry = RegistryClient(settings.schema_registry_url)
    try:
        return await read_task_events(settings, EventCodec(registry), task_id)
    finally:
        await registry.close()


def stored(settings: Settings, table: RowTable[Any], task_id: str) -> dict[Any, Any]:
    rows = pg_rows(settings, f"SELECT * FROM {table.name} WHERE task_id = %s", task_id)
    models = [table.row_type.model_validate(row) for row in rows]
    return {table.key_of_row(model): model for model in models}


def snapshot(settings: Settings, task_id: str, org_id: str, session_id: str) -> list[Any]:
    """Every read-model row of the task, its org's usage and its session."""
    return [
        *(stored(settings, table, task_id) for table in TABLES),
        pg_rows(settings, "SELECT * FROM task_executions WHERE task_id = %s", task_id),
        pg_rows(settings, USAGE, org_id),
        pg_rows(settings, "SELECT * FROM sessions WHERE session_id = %s", session_id),
    ]


async def test_projector_writes_each_read_model_once_from_mixed_up_batches(stack: Settings) -> None:
    await migrate(stack.postgres_dsn)
    suffix = uuid.uuid4().hex[:12]
    task_id, org_id, session_id = f"rm-{suffix}", f"org-{suffix}", f"session-{suffix}"
    history = planned_task(task_id, session_id=session_id, org_id=org_id)
    async with AsyncConnectionPool(stack.postgres_dsn, min_size=1, max_size=1, open=False) as pool:
        queries = TaskQueries(pool)
        await project(stack, [history[2:6]])
        (pending,) = await queries.approvals(task_id)
        assert (pending["approval_id"], pending["status"], pending["decided_by"]) == (
            f"ap-{task_id}",
            "pending",
            None,
        )
        assert [a.approval_id for a in await queries.pending_approvals(org_id)] == [f"ap-{task_id}"]
        # The submission last, duplicates within and across batches, a redelivery of everything.
        await project(stack, [history[5:12], history[1:5] + history[10:], history, history[:1], history])
        assert await queries.pending_approvals(org_id) == []
        folded = {table.name: fold_rows(table, {}, history) for table in TABLES}
        assert sorted(await queries.llm_calls(task_id), key=repr) == sorted(folded["llm_calls"], key=repr)
        assert await queries.tool_calls(task_id) == folded["tool_calls"]
        assert sorted(await queries.agents(task_id), key=repr) == sorted(folded["agent_executions"], key=repr)
        (decided,) = await queries.approvals(task_id)
        assert (decided["status"], decided["decided_by"], decided["decision_reason"]) == (
            "granted",
            "bob",
            "fine",
        )
        (first_day,) = await queries.usage(org_id, date(2026, 3, 1), date(2026, 3, 1))
        assert (first_day.total_tokens, first_day.calls, first_day.cache_hits) == (15, 1, 1)
        session_read = await queries.session(session_id)
        assert session_read is not None and (session_read.tokens_used, session_read.task_count) == (51, 1)

    for table in TABLES:
        expected = {table.key_of_row(row): row for row in fold_rows(table, {}, history)}
        assert stored(stack, table, task_id) == expected, table.name
    (approval,) = stored(stack, APPROVALS, task_id).values()
    assert (approval.approval_id, approval.status, approval.decided_by) == (f"ap-{task_id}", "granted", "bob")
    (task,) = pg_rows(stack, "SELECT * FROM task_executions WHERE task_id = %s", task_id)
    assert (task["cost_usd"], task["token_budget"], task["event_count"]) == (0.875, 1000, len(history))
    usage = pg_rows(stack, USAGE, org_id)
    assert [
        (u["day"].isoformat(), u["total_tokens"], u["cost_usd"], u["calls"], u["cache_hits"]) for u in usage
    ] == [
        ("2026-03-01", 15, 0.25, 1, 1),
        ("2026-03-02", 36, 0.625, 2, 0),
    ]
    (session,) = pg_rows(stack, "SELECT * FROM sessions WHERE session_id = %s", session_id)
    assert (session["org_id"], session["token_budget"], session["tokens_used"], session["cost_usd"]) == (
        org_id,
        1000,
        51,
        0.875,
    )
    assert (session["task_count"], session["first_task_at"]) == (1, history[0].envelope.occurred_at)


async def test_a_planned_task_fills_the_read_models_and_redelivery_changes_nothing(
    platform: Settings,
) -> None:
    suffix = uuid.uuid4().hex[:12]
    org_id, session_id = f"org-{suffix}", f"session-{suffix}"
    view = submit_and_wait(
        platform,
        {"query": PLANNED_QUERY, "session_id": session_id, "token_budget": 50000},
        org=org_id,
    )
    assert view["status"] == "completed", view
    task_id = view["task_id"]
    history = await logged_history(platform, task_id)
    assert len(history) == view["event_count"]

    calls = stored(platform, LLM_CALLS, task_id)
    attempts = {
        (e.task_id, e.payload.idempotency_key, e.payload.attempt)
        for e in history
        if isinstance(e.payload, LlmCallRequested | LlmCallCompleted | LlmCallFailed)
    }
    assert set(calls) == attempts and attempts
    assert {call.status for call in calls.values()} == {"completed"}
    tool_keys = {
        (e.task_id, e.payload.idempotency_key) for e in history if isinstance(e.payload, ToolCallRequested)
    }
    tools = stored(platform, TOOL_CALLS, task_id)
    assert set(tools) == tool_keys and tool_keys
    assert {(t.tool, t.status, t.decision) for t in tools.values()} == {
        ("calculator", "completed", "allowed")
    }

    agents = stored(platform, AGENT_EXECUTIONS, task_id)
    agent_ids = {getattr(e.payload, "agent_id", None) for e in history} - {None}
    assert set(agents) == {(task_id, agent) for agent in agent_ids | {"main"}}
    assert len(agents) > 1, "a planned task runs sub-agents"
    assert all(agent.status == "completed" for agent in agents.values())
    completions = [e.payload for e in history if isinstance(e.payload, LlmCallCompleted)]
    assert sum(agent.total_tokens for agent in agents.values()) == view["total_tokens"]
    assert sum(agent.llm_calls for agent in agents.values()) == view["llm_calls"]

    completed = [e for e in history if isinstance(e.payload, LlmCallCompleted)]
    usage = pg_rows(platform, USAGE, org_id)
    assert [u["day"] for u in usage] == sorted({e.envelope.occurred_at.date() for e in completed})
    assert [sum(u[c] for u in usage) for c in ("total_tokens", "calls", "cache_hits")] == [
        sum(c.total_tokens for c in completions),
        len(completions),
        sum(c.cache_hit for c in completions),
    ]
    (session,) = pg_rows(platform, "SELECT * FROM sessions WHERE session_id = %s", session_id)
    assert (session["tokens_used"], session["task_count"], session["token_budget"]) == (
        view["total_tokens"],
        1,
        50000,
    )
    assert stored(platform, APPROVALS, task_id) == {}, "the offline planner's tools need no approval"

    before = snapshot(platform, task_id, org_id, session_id)
    await project(platform, [history, history[::-1]])
    assert snapshot(platform, task_id, org_id, session_id) == before
