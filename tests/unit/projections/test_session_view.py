"""Session increments, taken from task-view changes, add up to the sessions' totals."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.session_view import SessionIncrement, session_increments
from projections.task_view import TaskView, apply, new_view
from schemas.events import Event
from tests.unit.projections.histories import planned_task

FIRST = planned_task("task-1")
SECOND = planned_task("task-2")
UNSESSIONED = planned_task("task-3", session_id=None)


def project(batches: list[list[Event]]) -> dict[str, SessionIncrement]:
    """Applies ``batches`` as the projector does; returns each session's increments added up the
    way the projector's upsert adds them."""
    views: dict[str, TaskView] = {}
    totals: dict[str, SessionIncrement] = {}
    for batch in batches:
        before = dict(views)
        for event in batch:
            views[event.task_id] = apply(views.get(event.task_id) or new_view(event), event)
        changed = sorted({event.task_id for event in batch})
        for inc in session_increments((before.get(task_id), views[task_id]) for task_id in changed):
            stored = totals.get(inc.session_id)
            totals[inc.session_id] = inc if stored is None else _upsert(stored, inc)
    return totals


def _upsert(stored: SessionIncrement, inc: SessionIncrement) -> SessionIncrement:
    def present(*values: Any) -> list[Any]:
        return [v for v in values if v is not None]

    return stored.model_copy(
        update={
            "token_budget": max(present(stored.token_budget, inc.token_budget), default=None),
            "tokens_used": stored.tokens_used + inc.tokens_used,
            "cost_usd": stored.cost_usd + inc.cost_usd,
            "task_count": stored.task_count + inc.task_count,
            "first_task_at": min(present(stored.first_task_at, inc.first_task_at), default=None),
            "last_task_at": max(present(stored.last_task_at, inc.last_task_at), default=None),
        }
    )


def test_one_session_two_tasks() -> None:
    totals = project([FIRST + SECOND + UNSESSIONED])
    assert totals == {
        "s1": SessionIncrement(
            session_id="s1",
            org_id="acme",
            token_budget=1000,
            tokens_used=102,
            cost_usd=1.75,
            task_count=2,
            first_task_at=FIRST[0].envelope.occurred_at,
            last_task_at=SECOND[0].envelope.occurred_at,
        )
    }


@settings(max_examples=100)
@given(st.permutations(FIRST + SECOND + UNSESSIONED), st.lists(st.integers(0, 54), max_size=5))
def test_increments_add_up_whatever_the_order_and_batches(shuffled: list[Event], cuts: list[int]) -> None:
    """The submission (which names the session) may come before, between or after the rest."""
    bounds = [0, *sorted(cuts), len(shuffled)]
    batches = [list(shuffled[a:b]) for a, b in itertools.pairwise(bounds)]
    assert project(batches) == project([FIRST + SECOND + UNSESSIONED])
