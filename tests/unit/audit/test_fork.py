"""Forks (copying a prefix, checking a fork) and comparing two runs, on histories from the real decider."""

from __future__ import annotations

import itertools

import pytest

from audit.compare import compare
from audit.fork import ForkError, check_fork, copy_prefix, valid_positions
from processors.task.decider import fold
from processors.task.history import event_id_for
from processors.task.state import Status
from tests.unit.processors.helpers import when
from tests.unit.processors.task.forking import FORK_ID, answer, forked, source


def test_the_copied_prefix_has_the_sources_payloads_and_links_to_its_events() -> None:
    original = source()
    copied = [event for event, _ in copy_prefix(original, 6, task_id=FORK_ID)]
    assert len(copied) == 6
    for copy, event in zip(copied, original, strict=False):
        assert copy.payload == event.payload
        assert copy.task_id == FORK_ID and copy.sequence == event.sequence
        assert copy.envelope.event_id == event_id_for(FORK_ID, event.sequence)
        assert copy.envelope.causation_id == str(event.envelope.event_id)
        assert copy.envelope.occurred_at == event.envelope.occurred_at
    # the hash chain is the fork's own, and it folds
    assert copied[0].envelope.prev_hash is None
    assert all(b.envelope.prev_hash == a.digest for a, b in itertools.pairwise(copied))
    assert fold(copied).task_id == FORK_ID


def test_copying_again_writes_the_same_records() -> None:
    original = source()
    assert copy_prefix(original, 5, task_id=FORK_ID) == copy_prefix(original, 5, task_id=FORK_ID)


def test_positions_inside_a_decision_or_after_the_end_are_not_forkable() -> None:
    # 1 submitted; 3 model call pending; 5 tool call awaiting policy; 6 tool call to run; 8 model call pending
    assert valid_positions(source()) == [1, 3, 5, 6, 8]


@pytest.mark.parametrize(
    ("at", "message"),
    [
        (0, "between 1 and 10"),
        (11, "between 1 and 10"),
        (10, "ends the task"),
        (4, r"inside a decision\); positions that work near it: \[1, 3, 5, 6, 8\]"),
        (7, "inside a decision"),
    ],
)
def test_a_fork_at_an_impossible_position_is_refused_with_the_reason(at: int, message: str) -> None:
    with pytest.raises(ForkError, match=message):
        check_fork(source(), at)


def test_settings_outside_the_whitelist_are_refused() -> None:
    with pytest.raises(ForkError, match="'user_role' is not settable"):
        check_fork(source(), 3, overrides={"user_role": "admin"})
    with pytest.raises(ForkError, match="max_steps='lots': not an integer"):
        check_fork(source(), 3, overrides={"max_steps": "lots"})
    with pytest.raises(ForkError, match="tier='huge'"):
        check_fork(source(), 3, overrides={"tier": "huge"})


def test_input_needs_a_place_to_go() -> None:
    assert check_fork(source(), 1, input="new").status is Status.SUBMITTED
    assert check_fork(source(), 8, input="new").main.pending_llm is not None
    with pytest.raises(ForkError, match="--input at 6"):
        check_fork(source(), 6, input="new")


def test_compare_shows_the_identical_prefix_the_branch_point_and_both_totals() -> None:
    original = source()
    state, history, _ = forked(3, model="bigger-model")
    state, _ = when(state, answer(state, "Forty-two.", model="bigger-model"), history)
    comparison = compare(original, history)
    assert comparison.first_difference == 3
    assert [row.same for row in comparison.rows[:3]] == [True, True, True]
    assert comparison.rows[3].b_type == "TaskForked" and "model=bigger-model" in (
        comparison.rows[3].b_detail or ""
    )
    assert comparison.branch == f"{FORK_ID} is a fork of source-1 at 3"
    a, b = comparison.a, comparison.b
    assert (a.status, b.status) == ("completed", "completed")
    # the fork branched inside the first call: it asked again with its model and was answered at once
    assert (a.llm_calls, b.llm_calls) == (2, 1)
    assert (a.steps, b.steps) == (2, 1)
    assert (a.total_tokens, b.total_tokens) == (30, 15)
    assert (a.cost_usd, b.cost_usd) == (0.002, 0.001)
    assert a.models == ["m"] and b.models == ["bigger-model"]
    assert (a.result, b.result) == ("The answer is 42.", "Forty-two.")
    assert b.forked_from == "source-1" and b.forked_at == 3
    assert len(comparison.rows) == max(len(original), len(history))


def test_equal_histories_have_no_difference() -> None:
    original = source()
    assert compare(original, original).first_difference is None
