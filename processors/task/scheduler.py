"""Which submitted task a worker starts next: priorities with headroom, and delayed starts.

A worker runs at most ``slots`` tasks at once. Waiting tasks start highest priority first (FIFO
within a priority), and each priority may hold only part of the slots — LOW at most half, NORMAL at
most three quarters — so that a flood of low-priority work always leaves room for a HIGH task to
start at once. A task with ``not_before`` in the future waits in a timer queue and takes no slot
until then.

Pure bookkeeping (no clock, no I/O): the worker passes the time in and awaits the slots.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from schemas.events import Priority

T = TypeVar("T")

_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
SHARE = {Priority.HIGH: 1.0, Priority.NORMAL: 0.75, Priority.LOW: 0.5}


def slot_limit(priority: Priority, slots: int) -> int:
    """Most tasks of ``priority`` (and lower) that may run at once; at least one."""
    return max(1, math.floor(slots * SHARE[priority]))


@dataclass(order=True)
class _Entry(Generic[T]):
    rank: int
    order: int
    priority: Priority = field(compare=False)
    item: T = field(compare=False)


class Scheduler(Generic[T]):
    """Priority queue with per-priority slot limits, and a timer queue for delayed starts."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a scheduler needs at least one slot, got {slots}")
        self.slots = slots
        self._ready: list[_Entry[T]] = []
        self._delayed: list[tuple[datetime, int, Priority, T]] = []
        self._running: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self._order = itertools.count()

    def submit(self, item: T, priority: Priority, not_before: datetime | None, now: datetime) -> None:
        if not_before is not None and not_before > now:
            heapq.heappush(self._delayed, (not_before, next(self._order), priority, item))
        else:
            heapq.heappush(self._ready, _Entry(_RANK[priority], next(self._order), priority, item))

    def next_wakeup(self) -> datetime | None:
        """When the earliest delayed task becomes ready."""
        return self._delayed[0][0] if self._delayed else None

    def release_due(self, now: datetime) -> int:
        """Move delayed tasks whose time has come to the ready queue; how many moved."""
        moved = 0
        while self._delayed and self._delayed[0][0] <= now:
            _, _, priority, item = heapq.heappop(self._delayed)
            heapq.heappush(self._ready, _Entry(_RANK[priority], next(self._order), priority, item))
            moved += 1
        return moved

    def _may_start(self, priority: Priority) -> bool:
        # Each share caps the tasks of its priority and every lower one; a task must fit under the
        # share of its own priority and of every priority above it (HIGH's share is all slots).
        for share in _RANK:
            if _RANK[share] <= _RANK[priority]:
                running = sum(n for p, n in self._running.items() if _RANK[p] >= _RANK[share])
                if running >= slot_limit(share, self.slots):
                    return False
        return True

    def take(self) -> tuple[T, Priority] | None:
        """The next task allowed to start now (its slot is taken), or None."""
        skipped: list[_Entry[T]] = []
        chosen = None
        while self._ready:
            entry = heapq.heappop(self._ready)
            if self._may_start(entry.priority):
                chosen = entry
                break
            skipped.append(entry)
        for entry in skipped:
            heapq.heappush(self._ready, entry)
        if chosen is None:
            return None
        self._running[chosen.priority] += 1
        return chosen.item, chosen.priority

    def done(self, priority: Priority) -> None:
        if self._running[priority] <= 0:
            raise ValueError(f"no {priority} task is running")
        self._running[priority] -= 1

    @property
    def waiting(self) -> int:
        return len(self._ready) + len(self._delayed)

    @property
    def running(self) -> int:
        return sum(self._running.values())
