"""The call, tool, approval and agent read models: rows from events, the same in any order."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.agent_view import AGENT_EXECUTIONS
from projections.approval_view import APPROVALS
from projections.llm_call_view import LLM_CALLS
from projections.rows import RowTable, fold_rows
from projections.tool_call_view import TOOL_CALLS
from projections.usage_view import UsageIncrement, usage_increments
from schemas.events import Event, ToolCallAuthorized, ToolCallDenied
from tests.unit.projections.histories import START, planned_task, sealed, tool

HISTORY = planned_task()
TABLES: list[RowTable[Any]] = [LLM_CALLS, TOOL_CALLS, APPROVALS, AGENT_EXECUTIONS]


def rows(table: RowTable[Any], events: list[Event]) -> dict[Any, Any]:
    return {table.key_of_row(row): row for row in fold_rows(table, {}, events)}


def test_llm_calls_one_row_per_attempt() -> None:
    calls = rows(LLM_CALLS, HISTORY)
    assert set(calls) == {("task-1", "l1", 1), ("task-1", "l2", 1), ("task-1", "l2", 2), ("task-1", "l3", 1)}
    first = calls["task-1", "l1", 1]
    assert (first.status, first.model, first.total_tokens, first.cost_usd, first.cache_hit) == (
        "completed",
        "m2",
        15,
        0.25,
        True,
    )
    assert first.requested_at == START + timedelta(seconds=2)
    assert first.ended_at == START + timedelta(seconds=3)
    failed = calls["task-1", "l2", 1]
    assert (failed.status, failed.error_type, failed.agent_id, failed.total_tokens) == (
        "failed",
        "E",
        "a1",
        0,
    )
    assert calls["task-1", "l2", 2].status == "completed"
    assert calls["task-1", "l3", 1].requested_at is None


def test_tool_call_row_carries_decision_approval_and_outcome() -> None:
    (call,) = rows(TOOL_CALLS, HISTORY).values()
    assert (call.status, call.decision, call.rule, call.approval_id) == (
        "completed",
        "allowed",
        "ask",
        "ap-task-1",
    )
    assert (call.output, call.latency_ms, call.attempts) == ("2", 3.0, 2)
    assert (call.error_type, call.error_attempt) == ("Timeout", 1)
    assert call.arguments_json == '{"expression": "1+1"}'


def test_a_denial_outranks_an_authorization() -> None:
    events = sealed(
        "t", [tool(ToolCallAuthorized, rule="allow"), tool(ToolCallDenied, rule="deny", reason="no")]
    )
    for order in (events, events[::-1]):
        (call,) = fold_rows(TOOL_CALLS, {}, order)
        assert (call.decision, call.rule, call.denial_reason, call.status) == (
            "denied",
            "deny",
            "no",
            "denied",
        )


def test_approval_row_pending_then_decided() -> None:
    pending = rows(APPROVALS, HISTORY[:6])["ap-task-1",]
    assert (pending.status, pending.tool, pending.rule, pending.reason) == (
        "pending",
        "calculator",
        "ask",
        "needs a human",
    )
    decided = rows(APPROVALS, HISTORY)["ap-task-1",]
    assert (decided.status, decided.decided_by, decided.decision_reason) == ("granted", "bob", "fine")
    assert decided.decided_at == START + timedelta(seconds=6)


def test_agent_rows_for_main_and_sub_agent() -> None:
    agents = rows(AGENT_EXECUTIONS, HISTORY)
    main, sub = agents["task-1", "main"], agents["task-1", "a1"]
    assert (main.status, main.llm_calls, main.tool_calls, main.total_tokens, main.cost_usd) == (
        "completed",
        2,
        2,
        23,
        0.375,
    )
    assert (main.model, main.started_at, main.ended_at) == (
        "m2",
        START + timedelta(seconds=2),
        HISTORY[-1].envelope.occurred_at,
    )
    assert (sub.status, sub.subtask_id, sub.llm_calls, sub.tool_calls, sub.total_tokens, sub.cost_usd) == (
        "completed",
        "st1",
        2,
        0,
        28,
        0.5,
    )
    assert sub.model == "m2"
    assert sub.started_at == START + timedelta(seconds=10)


@settings(max_examples=100)
@given(st.permutations(HISTORY))
def test_rows_are_order_insensitive(shuffled: list[Event]) -> None:
    for table in TABLES:
        assert rows(table, list(shuffled)) == rows(table, HISTORY), table.name


@settings(max_examples=100)
@given(st.permutations(HISTORY), st.lists(st.integers(0, len(HISTORY)), max_size=4))
def test_rows_are_the_same_whatever_the_batches(shuffled: list[Event], cuts: list[int]) -> None:
    """Folding batch by batch into the stored rows gives the rows of folding everything at once."""
    bounds = [0, *sorted(cuts), len(shuffled)]
    for table in TABLES:
        stored: dict[Any, Any] = {}
        for start, end in itertools.pairwise(bounds):
            for row in fold_rows(table, stored, shuffled[start:end]):
                stored[table.key_of_row(row)] = row
        assert stored == rows(table, HISTORY), table.name


def test_usage_per_org_and_utc_day() -> None:
    other_org = planned_task("task-2", org_id="globex")
    increments = usage_increments(HISTORY + other_org)
    assert increments == [
        UsageIncrement(
            org_id="acme",
            day=date(2026, 3, 1),
            prompt_tokens=10,
            completion_tokens=5,
            total_tokens=15,
            cost_usd=0.25,
            calls=1,
            cache_hits=1,
        ),
        UsageIncrement(
            org_id="acme",
            day=date(2026, 3, 2),
            prompt_tokens=24,
            completion_tokens=12,
            total_tokens=36,
            cost_usd=0.625,
            calls=2,
            cache_hits=0,
        ),
        UsageIncrement(
            org_id="globex",
            day=date(2026, 3, 1),
            prompt_tokens=10,
            completion_tokens=5,
            total_tokens=15,
            cost_usd=0.25,
            calls=1,
            cache_hits=1,
        ),
        UsageIncrement(
            org_id="globex",
            day=date(2026, 3, 2),
            prompt_tokens=24,
            completion_tokens=12,
            total_tokens=36,
            cost_usd=0.625,
            calls=2,
            cache_hits=0,
        ),
    ]


@settings(max_examples=100)
@given(st.permutations(HISTORY), st.lists(st.integers(0, len(HISTORY)), max_size=4))
def test_usage_increments_add_up_whatever_the_batches(shuffled: list[Event], cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(shuffled)]
    totals: dict[tuple[str, date], list[float]] = {}
    for start, end in itertools.pairwise(bounds):
        for inc in usage_increments(shuffled[start:end]):
            current = totals.setdefault((inc.org_id, inc.day), [0, 0, 0, 0.0, 0, 0])
            for i, value in enumerate(
                (
                    inc.prompt_tokens,
                    inc.completion_tokens,
                    inc.total_tokens,
                    inc.cost_usd,
                    inc.calls,
                    inc.cache_hits,
                )
            ):
                current[i] += value
    assert totals == {
        (i.org_id, i.day): [
            i.prompt_tokens,
            i.completion_tokens,
            i.total_tokens,
            i.cost_usd,
            i.calls,
            i.cache_hits,
        ]
        for i in usage_increments(HISTORY)
    }
