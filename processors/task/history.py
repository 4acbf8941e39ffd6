"""Stamping decided payloads into a task's history: envelope, sequence, ids and the hash chain.

Pure: the time comes in as an argument and event ids are derived from (task id, sequence), so
re-deciding the same step after a crash yields the same ids and consumers dedupe it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from processors.task.decider import TaskState
from schemas.events import CheckpointSaved, Envelope, Event, Payload, TaskSubmitted
from schemas.serde import seal

# Fixed namespace for uuid5 event ids; changing it would change every derived id.
EVENT_ID_NAMESPACE = uuid.UUID("5b0c3a1e-6f1d-4c55-9a56-0c8d2a7e4b11")


# The producer of a fork's copies of its source's events (audit/fork.py): the copy records were
# written by the fork, not by the source's producer (whom ``causation_id`` leads back to).
FORK_PRODUCER = "agentlog-fork"
FORK_PRODUCER_VERSION = "0.1.0"


def is_copy(event: Event) -> bool:
    """Whether ``event`` is a fork's copy of another task's event. What it records (a call, its
    tokens and cost, an approval) happened once, in the source task, and is accounted there."""
    return event.envelope.producer == FORK_PRODUCER


def event_id_for(task_id: str, sequence: int) -> uuid.UUID:
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{task_id}/{sequence}")


def checkpoint(
    state: TaskState, *, now: datetime, producer: str, producer_version: str
) -> tuple[Event, bytes]:
    """The ``CheckpointSaved`` record of ``state``: the state after the task's event ``state.sequence``.

    It is not part of the task's history: its envelope names the last event it includes (sequence,
    event id as causation, digest as ``prev_hash``), and its id derives from that position, so a
    re-written checkpoint of the same position is the same record.
    """
    envelope = Envelope(
        event_id=uuid.uuid5(EVENT_ID_NAMESPACE, f"{state.task_id}/checkpoint/{state.sequence}"),
        task_id=state.task_id,
        org_id=state.org_id,
        user_id=state.user_id,
        sequence=max(state.sequence, 0),
        occurred_at=now,
        causation_id=state.last_event_id,
        correlation_id=state.correlation_id,
        producer=producer,
        producer_version=producer_version,
        prev_hash=state.last_digest,
    )
    payload = CheckpointSaved(step=state.steps, status=state.status.value, state_json=state.model_dump_json())
    return seal(envelope, payload)


def submission(
    *,
    task_id: str,
    org_id: str,
    user_id: str,
    payload: TaskSubmitted,
    now: datetime,
    producer: str,
    producer_version: str,
    correlation_id: str | None = None,
) -> tuple[Event, bytes]:
    """The first event of a task (sequence 0): its submission."""
    envelope = Envelope(
        event_id=event_id_for(task_id, 0),
        task_id=task_id,
        org_id=org_id,
        user_id=user_id,
        sequence=0,
        occurred_at=now,
        causation_id=None,
        correlation_id=correlation_id or task_id,
        producer=producer,
        producer_version=producer_version,
        prev_hash=None,
    )
    return seal(envelope, payload)


def stamp(
    state: TaskState,
    payloads: Sequence[Payload],
    *,
    now: datetime,
    producer: str,
    producer_version: str,
) -> list[tuple[Event, bytes]]:
    """Envelope ``payloads`` as the next events of ``state``'s task, chained by hash and sequence."""
    stamped: list[tuple[Event, bytes]] = []
    sequence, prev_hash, causation = state.sequence, state.last_digest, state.last_event_id
    for payload in payloads:
        sequence += 1
        envelope = Envelope(
            event_id=event_id_for(state.task_id, sequence),
            task_id=state.task_id,
            org_id=state.org_id,
            user_id=state.user_id,
            sequence=sequence,
            occurred_at=now,
            causation_id=causation,
            correlation_id=state.correlation_id,
            producer=producer,
            producer_version=producer_version,
            prev_hash=prev_hash,
        )
        event, body = seal(envelope, payload)
        stamped.append((event, body))
        prev_hash, causation = event.digest, str(event.envelope.event_id)
    return stamped
