"""The circuit breaker as a pure state machine, driven by explicit clock readings."""

from __future__ import annotations

from processors.llm.breaker import Breaker, BreakerPolicy, BreakerStatus, allow, available, record

POLICY = BreakerPolicy(failure_ratio=0.5, min_calls=4, window_seconds=10, cooldown_seconds=5)


def _run(outcomes: list[tuple[float, bool]], breaker: Breaker | None = None) -> Breaker:
    state = breaker or Breaker()
    for now, ok in outcomes:
        allowed, state = allow(state, now, POLICY)
        assert allowed
        state = record(state, ok, now, POLICY)
    return state


def test_it_stays_closed_below_the_minimum_number_of_calls() -> None:
    assert _run([(0, False), (1, False), (2, False)]).status is BreakerStatus.CLOSED


def test_it_opens_above_the_failure_ratio_and_refuses_calls() -> None:
    state = _run([(0, True), (1, False), (2, False), (3, False)])
    assert state.status is BreakerStatus.OPEN
    assert allow(state, 4, POLICY) == (False, state)
    assert not available(state, 7.9, POLICY)


def test_a_ratio_at_the_threshold_does_not_open() -> None:
    assert _run([(0, True), (1, False), (2, True), (3, False)]).status is BreakerStatus.CLOSED


def test_failures_outside_the_window_are_forgotten() -> None:
    state = _run([(0, False), (1, False), (2, False), (13, True)])
    assert state.status is BreakerStatus.CLOSED
    assert state.outcomes == ((13, 1, 0),)  # one second's bucket: one success, no failure


def test_outcomes_are_counted_per_second_of_the_window() -> None:
    # Thousands of calls keep at most one bucket per second of the window.
    state = _run([(10 + i / 100, True) for i in range(3000)])
    assert len(state.outcomes) <= POLICY.window_seconds + 1
    assert sum(ok for _, ok, _ in state.outcomes) <= 3000
    failing = _run([(40 + i / 100, False) for i in range(10)], state)
    assert failing.status is BreakerStatus.CLOSED  # 10 failures among ~1000 recent successes


def test_after_the_cooldown_one_probe_goes_through_and_success_closes() -> None:
    opened = _run([(0, False), (1, False), (2, False), (3, False)])
    assert available(opened, 8, POLICY)
    allowed, probing = allow(opened, 8, POLICY)
    assert allowed and probing.status is BreakerStatus.HALF_OPEN
    assert allow(probing, 8.5, POLICY)[0] is False  # only one probe at a time
    assert record(probing, True, 9, POLICY) == Breaker()


def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    opened = _run([(0, False), (1, False), (2, False), (3, False)])
    _, probing = allow(opened, 8, POLICY)
    reopened = record(probing, False, 9, POLICY)
    assert reopened.status is BreakerStatus.OPEN and reopened.since == 9
    assert allow(reopened, 13, POLICY)[0] is False
    assert allow(reopened, 14, POLICY)[0] is True


def test_a_probe_that_never_reports_is_replaced_after_a_cooldown() -> None:
    _, probing = allow(_run([(0, False), (1, False), (2, False), (3, False)]), 8, POLICY)
    allowed, again = allow(probing, 13, POLICY)
    assert allowed and again.status is BreakerStatus.HALF_OPEN and again.since == 13


def test_a_late_result_while_open_changes_nothing() -> None:
    opened = _run([(0, False), (1, False), (2, False), (3, False)])
    assert record(opened, True, 4, POLICY) is opened
