"""A fork's copies of its source's events: part of the fork's history, but what they record (calls,
tokens, cost, approvals) is accounted once, to the source."""

from __future__ import annotations

from functools import reduce

from processors.task.history import FORK_PRODUCER, is_copy
from projections.llm_call_view import LLM_CALLS
from projections.rows import fold_rows
from projections.task_view import TaskView, apply, new_view
from projections.tool_call_view import TOOL_CALLS
from projections.usage_view import usage_increments
from schemas.events import Event, LlmCallCompleted
from tests.unit.processors.helpers import when
from tests.unit.processors.task.forking import answer, forked, source


def _view(history: list[Event]) -> TaskView:
    return reduce(apply, history, new_view(history[0]))


def _fork_run() -> tuple[list[Event], list[Event]]:
    """The source (10 events, two model calls and a tool call) and its fork at 8 (copies of 0-7,
    TaskForked, then its own model call and completion)."""
    state, history, _ = forked(8)
    when(state, answer(state, "Forty-two."), history)
    return source(), history


def test_copies_are_marked_by_their_producer_and_only_they_are() -> None:
    original, fork = _fork_run()
    assert [is_copy(e) for e in fork] == [True] * 8 + [False] * (len(fork) - 8)
    assert {e.envelope.producer for e in fork[:8]} == {FORK_PRODUCER}
    assert not any(is_copy(e) for e in original)


def test_the_forks_totals_are_what_the_fork_spent() -> None:
    original, fork = _fork_run()
    own_calls = [e.payload for e in fork[8:] if isinstance(e.payload, LlmCallCompleted)]
    view = _view(fork)
    assert view.llm_calls == len(own_calls) == 1 and view.tool_calls == 0
    assert view.total_tokens == sum(c.total_tokens for c in own_calls)
    assert view.event_count == len(fork) and view.status == "completed"
    # The source keeps its own totals: together each call is counted once.
    assert _view(original).llm_calls == 2


def test_org_usage_counts_each_call_once_and_copies_make_no_rows() -> None:
    original, fork = _fork_run()
    [both] = usage_increments(original + fork)
    [alone] = usage_increments(original)
    assert both.calls == alone.calls + 1
    fork_rows = fold_rows(LLM_CALLS, {}, fork)
    assert [row.task_id for row in fork_rows] == [fork[0].task_id]  # its own call only
    assert fold_rows(TOOL_CALLS, {}, fork) == []
