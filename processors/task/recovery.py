"""Reconciling a checkpointed task state with the log before a restarted worker resumes the task.

A decision's events and its checkpoint go out in one batch, but to two topics: a worker killed
mid-write may leave events on the log after its last checkpoint, or (the other way round) a
checkpoint whose events did not all land. Resuming from the checkpoint alone would then re-decide
recorded steps (two versions of one sequence number, a broken hash chain) or leave a gap. So the
log decides: the checkpoint is trusted only as far as the log holds its last event, byte for byte
(same sequence, same digest), and the events after it are folded in; otherwise the state is the
fold of the task's whole history.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from processors.task.decider import fold
from processors.task.state import TaskState
from schemas.events import Event

# Records are stamped by the producer when sent, after the decision (and the checkpoint's time);
# the margin covers clock steps and batching between them.
MARGIN = timedelta(seconds=30)

ReadHistory = Callable[[datetime | None], Awaitable[list[Event]]]


async def reconcile(state: TaskState, saved_at: datetime, read: ReadHistory) -> TaskState:
    """The task's true state: ``state`` (its checkpoint, saved at ``saved_at``) brought in line with
    the log. ``read(since)`` returns the task's events written since a time (None: all of them)."""
    recent = await read(saved_at - MARGIN)
    anchor = next((event for event in recent if event.sequence == state.sequence), None)
    if anchor is not None and anchor.digest == state.last_digest:
        return fold([event for event in recent if event.sequence > state.sequence], state)
    return fold(await read(None))
