"""Forks: a new task whose history starts as a copy of another's first N events (pure helpers).

The processor (``processors.task.worker``) does the fork: it reads the source's history, checks the
request with :func:`check_fork`, writes :func:`copy_prefix` as the new task's first N events, and
decides ``ForkTask`` (``TaskForked`` at sequence N, then the effects the prefix left pending,
requested again under the fork's own keys). The REST API runs the same check before it asks, so a
bad request is a 422, not a dead letter.

A copy has the source event's payload unchanged and a new envelope: the fork's task id, an event id
derived from (fork, sequence), the hash chain recomputed over the copies, the source's time and
correlation id, ``causation_id`` = the source event's id (the link back), and producer
``agentlog-fork``: the read models recognise copies by it and account their calls, tokens, cost and
approvals to the source only (``processors.task.history.is_copy``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from processors.task.decider import HistoryError, evolve, pending_effects
from processors.task.history import FORK_PRODUCER, FORK_PRODUCER_VERSION, event_id_for
from processors.task.overrides import ForkChangeError, parse_overrides
from processors.task.state import TERMINAL, AgentStatus, Status, TaskState
from schemas.events import MAIN_AGENT, Envelope, Event
from schemas.serde import seal


class ForkError(ValueError):
    """The fork cannot be made as asked: the position, a change, or the source's history."""


def copy_prefix(source: Sequence[Event], prefix_events: int, *, task_id: str) -> list[tuple[Event, bytes]]:
    """The first ``prefix_events`` events of ``source`` re-stamped as the history of ``task_id``.

    Deterministic (ids from the position, times from the source): copying again after a crash
    writes the same records, which every consumer deduplicates.
    """
    _check_range(source, prefix_events)
    copied: list[tuple[Event, bytes]] = []
    prev_hash: str | None = None
    for original in source[:prefix_events]:
        envelope = original.envelope
        copy = Envelope(
            event_id=event_id_for(task_id, envelope.sequence),
            task_id=task_id,
            org_id=envelope.org_id,
            user_id=envelope.user_id,
            sequence=envelope.sequence,
            occurred_at=envelope.occurred_at,
            causation_id=str(envelope.event_id),
            correlation_id=envelope.correlation_id,
            producer=FORK_PRODUCER,
            producer_version=FORK_PRODUCER_VERSION,
            prev_hash=prev_hash,
        )
        event, body = seal(copy, original.payload)
        copied.append((event, body))
        prev_hash = event.digest
    return copied


def _check_range(source: Sequence[Event], prefix_events: int) -> None:
    if not source:
        raise ForkError("the source task has no events")
    task_id = source[0].task_id
    if not 1 <= prefix_events <= len(source):
        raise ForkError(
            f"cannot fork task {task_id} at {prefix_events}: it has {len(source)} events, "
            f"so the position must be between 1 and {len(source)}"
        )
    for position, event in enumerate(source[:prefix_events]):
        if event.sequence != position:
            raise ForkError(
                f"task {task_id}: event {position} of its history is missing (found {event.sequence})"
            )


def cut_problem(state: TaskState) -> str | None:
    """Why a fork cannot continue from ``state`` (the state after the prefix), or None if it can.

    A decision's events are written together; a cut between two of them can leave an agent with
    nothing requested and nothing to wait for, and the fork would never move again.
    """
    if state.status in TERMINAL:
        return f"the prefix ends the task ({state.status.value}): there is nothing to continue"
    if state.status is not Status.RUNNING:
        return None  # submitted: the fork starts it
    planned = bool(state.plan)
    for agent in state.agents.values():
        if agent.status is not AgentStatus.RUNNING or agent.busy:
            continue
        if agent.agent_id == MAIN_AGENT and planned:
            continue  # the main agent waits for its subtasks
        return f"agent {agent.agent_id} has neither a pending call nor one to wait for (inside a decision)"
    if not pending_effects(state) and not state.waiting_for_approval:
        return "nothing is pending at this point (inside a decision)"
    return None


def valid_positions(source: Sequence[Event]) -> list[int]:
    """Every N the source can be forked at (its prefix leaves something to continue)."""
    positions: list[int] = []
    state = TaskState()
    for event in source:
        state = evolve(state, event)
        if cut_problem(state) is None:
            positions.append(event.sequence + 1)
    return positions


def check_fork(
    source: Sequence[Event],
    prefix_events: int,
    *,
    input: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> TaskState:
    """The state after the prefix, once the fork is known to be possible; :class:`ForkError` if not."""
    _check_range(source, prefix_events)
    try:
        parse_overrides(overrides or {})
    except ForkChangeError as exc:
        raise ForkError(str(exc)) from exc
    state = TaskState()
    try:
        for event in source[:prefix_events]:
            state = evolve(state, event)
    except HistoryError as exc:
        raise ForkError(f"the source's history does not fold: {exc}") from exc
    problem = cut_problem(state)
    if problem is not None:
        nearby = _nearby(valid_positions(source), prefix_events)
        raise ForkError(
            f"cannot fork task {state.task_id} at {prefix_events}: {problem}; "
            f"positions that work near it: {nearby or 'none'}"
        )
    if input is not None and state.main.messages and state.main.pending_llm is None:
        raise ForkError(
            f"--input at {prefix_events}: the input replaces the query before the first LLM call, or is "
            "added to a pending call of the main agent; at this position the main agent has none"
        )
    return state


def _nearby(positions: list[int], at: int, count: int = 3) -> list[int]:
    below = [p for p in positions if p < at][-count:]
    above = [p for p in positions if p > at][:count]
    return below + above
