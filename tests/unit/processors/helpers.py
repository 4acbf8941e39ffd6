"""Given/when/then helpers for the task decider: histories are built through the real stamping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from processors.task.decider import Command, TaskState, decide, evolve
from processors.task.history import stamp, submission
from schemas.events import Event, Payload, TaskSubmitted

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def submitted(
    query: str = "What is 6 * 7?", task_id: str = "task-1", **fields: Any
) -> tuple[TaskState, list[Event]]:
    event, _ = submission(
        task_id=task_id,
        org_id="org-1",
        user_id="user-1",
        payload=TaskSubmitted(query=query, **fields),
        now=T0,
        producer="test",
        producer_version="0",
    )
    return evolve(TaskState(), event), [event]


def when(state: TaskState, command: Command, history: list[Event]) -> tuple[TaskState, list[Payload]]:
    """Decide, stamp and evolve: the state after the command, and the payloads it produced."""
    payloads = decide(command, state)
    now = T0 + timedelta(seconds=len(history))
    for event, _ in stamp(state, payloads, now=now, producer="test", producer_version="0"):
        history.append(event)
        state = evolve(state, event)
    return state, payloads


def types(payloads: list[Payload]) -> list[str]:
    return [p.record_name for p in payloads]
