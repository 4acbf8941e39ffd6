"""The worker's scheduler: priorities with headroom, FIFO within a priority, delayed starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.task.scheduler import Scheduler, slot_limit
from schemas.events import Priority

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_flood_of_low_priority_work_leaves_room_for_high() -> None:
    scheduler: Scheduler[str] = Scheduler(slots=8)
    for i in range(100):
        scheduler.submit(f"low-{i}", Priority.LOW, None, NOW)
    started = []
    while (taken := scheduler.take()) is not None:
        started.append(taken[0])
    assert started == [f"low-{i}" for i in range(4)]  # half the slots
    scheduler.submit("high", Priority.HIGH, None, NOW)
    scheduler.submit("normal", Priority.NORMAL, None, NOW)
    assert scheduler.take() == ("high", Priority.HIGH)
    assert scheduler.take() == ("normal", Priority.NORMAL)
    assert scheduler.running == 6


def test_highest_priority_first_and_fifo_within_one() -> None:
    scheduler: Scheduler[str] = Scheduler(slots=10)
    for name, priority in [
        ("n1", Priority.NORMAL),
        ("l1", Priority.LOW),
        ("h1", Priority.HIGH),
        ("n2", Priority.NORMAL),
        ("h2", Priority.HIGH),
    ]:
        scheduler.submit(name, priority, None, NOW)
    order = [scheduler.take() for _ in range(5)]
    assert [t[0] for t in order if t] == ["h1", "h2", "n1", "n2", "l1"]


def test_a_freed_slot_goes_to_the_best_waiting_task() -> None:
    scheduler: Scheduler[str] = Scheduler(slots=2)
    scheduler.submit("h1", Priority.HIGH, None, NOW)
    scheduler.submit("h2", Priority.HIGH, None, NOW)
    assert scheduler.take() and scheduler.take()
    scheduler.submit("low", Priority.LOW, None, NOW)
    scheduler.submit("high", Priority.HIGH, None, NOW)
    assert scheduler.take() is None  # full
    scheduler.done(Priority.HIGH)
    assert scheduler.take() == ("high", Priority.HIGH)


def test_delayed_tasks_take_no_slot_until_due() -> None:
    scheduler: Scheduler[str] = Scheduler(slots=1)
    later = NOW + timedelta(seconds=30)
    scheduler.submit("later", Priority.HIGH, later, NOW)
    assert scheduler.take() is None and scheduler.next_wakeup() == later
    scheduler.submit("now", Priority.LOW, None, NOW)
    assert scheduler.take() == ("now", Priority.LOW)
    scheduler.done(Priority.LOW)
    assert scheduler.release_due(NOW + timedelta(seconds=29)) == 0
    assert scheduler.release_due(later) == 1
    assert scheduler.take() == ("later", Priority.HIGH)


def test_bad_bookkeeping_is_loud() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Scheduler(slots=0)
    with pytest.raises(ValueError, match="no LOW task is running"):
        Scheduler(slots=1).done(Priority.LOW)


@given(st.integers(1, 64), st.lists(st.sampled_from(list(Priority)), max_size=200))
def test_limits_always_hold(slots: int, priorities: list[Priority]) -> None:
    scheduler: Scheduler[int] = Scheduler(slots)
    for i, priority in enumerate(priorities):
        scheduler.submit(i, priority, None, NOW)
    taken = []
    while (next_task := scheduler.take()) is not None:
        taken.append(next_task[1])
    assert len(taken) <= slots
    assert taken.count(Priority.LOW) <= slot_limit(Priority.LOW, slots)
    assert taken.count(Priority.LOW) + taken.count(Priority.NORMAL) <= slot_limit(Priority.NORMAL, slots)
    # Nothing that could start was left waiting: the queue is empty or the next one is blocked.
    if scheduler.waiting:
        assert scheduler.take() is None
    if Priority.HIGH in priorities and priorities.count(Priority.HIGH) <= slots:
        assert taken.count(Priority.HIGH) == priorities.count(Priority.HIGH)
