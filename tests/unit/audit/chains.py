"""A small task history with a real hash chain, and its tampered variants (for the audit tests)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from audit.verify import LoggedEvent
from schemas.events import (
    AgentStepFinished,
    AgentStepStarted,
    Envelope,
    Event,
    Payload,
    StepKind,
    TaskSubmitted,
)
from schemas.serde import seal

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def envelope(task_id: str, sequence: int, prev_hash: str | None, org: str = "acme") -> Envelope:
    return Envelope(
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{task_id}/{sequence}"),
        task_id=task_id,
        org_id=org,
        user_id="alice",
        sequence=sequence,
        occurred_at=T0 + timedelta(seconds=sequence),
        correlation_id=task_id,
        producer="test",
        producer_version="0",
        prev_hash=prev_hash,
    )


def payload(sequence: int, text: str = "") -> Payload:
    if sequence == 0:
        return TaskSubmitted(query=f"question {text}")
    if sequence % 2:
        return AgentStepStarted(step=sequence, kind=StepKind.THINK)
    return AgentStepFinished(step=sequence - 1, kind=StepKind.THINK, outcome=f"done {text}")


def history(task_id: str = "t-1", events: int = 6, org: str = "acme") -> list[tuple[Event, bytes]]:
    chain: list[tuple[Event, bytes]] = []
    prev = None
    for sequence in range(events):
        event, body = seal(envelope(task_id, sequence, prev, org), payload(sequence))
        chain.append((event, body))
        prev = event.digest
    return chain


def logged(chain: list[tuple[Event, bytes]]) -> list[LoggedEvent]:
    return [LoggedEvent.of(event, f"t:0:{i}") for i, (event, _) in enumerate(chain)]


def edited(chain: list[tuple[Event, bytes]], sequence: int) -> list[tuple[Event, bytes]]:
    """The payload of ``sequence`` changed, its envelope (and every other event) left alone."""
    copy = list(chain)
    event = copy[sequence][0]
    copy[sequence] = seal(event.envelope, payload(sequence, "EDITED"))
    return copy


def rechained(chain: list[tuple[Event, bytes]], sequence: int) -> list[tuple[Event, bytes]]:
    """An edit of ``sequence`` with every later event re-chained: a consistent rewrite."""
    copy = edited(chain, sequence)
    for index in range(sequence + 1, len(copy)):
        event = copy[index][0]
        env = event.envelope.model_copy(update={"prev_hash": copy[index - 1][0].digest})
        copy[index] = seal(env, event.payload)
    return copy
