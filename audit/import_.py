"""``agentlog import``: an export's events produced to another deployment's topics, unchanged.

Each event goes to ``<target prefix>.<its topic's suffix>`` keyed by its task id, with its original
Avro body (so its digest and every ``prev_hash`` hold), headers and timestamp; the body is framed
with the id the *target's* schema registry gives its writer schema (registered there under the
target topic's subject), so the target's consumers decode it like any record of their own.

Idempotent by checking what exists: before producing anything, the target's task topics are read
for the export's tasks; an event already there with the same digest is skipped, one there with a
different digest is a conflict and nothing is produced. An import interrupted half-way therefore
finishes when run again. (Consumers dedupe on event ids as well, so even a race with another import
would not change a read model.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from audit.export import ExportedEvent
from audit.log import ReadStats, read_events
from schemas.codec import EventCodec
from schemas.registry.client import subject_for
from schemas.serde import frame, parsed_schema, writer_fullname
from streams.admin import ensure_topics
from streams.settings import Settings
from streams.topics import TASK_TOPICS

ProgressCallback = Callable[[int, int], None]


class ImportConflictError(RuntimeError):
    """The target holds other content under an exported event's (task id, sequence)."""


@dataclass
class ImportResult:
    events: int = 0
    produced: int = 0
    skipped: int = 0
    tasks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImportPlan:
    to_produce: list[ExportedEvent]
    skipped: int
    conflicts: list[str]


def plan_import(exported: Sequence[ExportedEvent], existing: dict[tuple[str, int], str]) -> ImportPlan:
    """What to produce of ``exported`` given the target's (task id, sequence) -> digest: pure."""
    to_produce, skipped, conflicts = [], 0, []
    seen: set[tuple[str, int]] = set()
    for item in exported:
        key = (item.task_id, item.sequence)
        found = existing.get(key)
        if found is None:
            if key not in seen:  # a redelivered copy in the export itself goes once
                seen.add(key)
                to_produce.append(item)
            else:
                skipped += 1
        elif found == item.event.digest:
            skipped += 1
        else:
            conflicts.append(
                f"task {item.task_id} sequence {item.sequence}: the target has digest {found},"
                f" the export {item.event.digest}"
            )
    return ImportPlan(to_produce, skipped, conflicts)


async def _existing(settings: Settings, codec: EventCodec, tasks: set[str]) -> dict[tuple[str, int], str]:
    """(task id, sequence) -> digest of the target's events of ``tasks`` (first copy of each)."""
    found: dict[tuple[str, int], str] = {}
    # One task: only its partitions; more: one pass over the task topics.
    task_id = next(iter(tasks)) if len(tasks) == 1 else None
    async for record in read_events(settings, codec, task_id=task_id, stats=ReadStats()):
        event = record.event
        if event.task_id in tasks:
            found.setdefault((event.task_id, event.sequence), event.digest)
    return found


async def _framed(codec: EventCodec, topic: str, item: ExportedEvent) -> bytes:
    fullname = writer_fullname(item.writer_schema)
    if json.loads(item.writer_schema) == parsed_schema(fullname):
        return await codec.encode_body(topic, fullname, item.body)
    # Written with another version of the record's schema: that version is registered in the
    # target too, so the body stays byte for byte what it was (and its digest with it).
    schema_id = await codec.registry.register(subject_for(topic, fullname), item.writer_schema)
    return frame(schema_id, item.body)


async def import_events(
    target: Settings,
    codec: EventCodec,
    exported: Iterable[ExportedEvent],
    *,
    on_progress: ProgressCallback | None = None,
) -> ImportResult:
    """Produce the export's events to ``target``'s topics (created if missing), skipping what the
    target holds already; raises :class:`ImportConflictError` (producing nothing) on a conflict."""
    events = list(exported)
    tasks = {item.task_id for item in events}
    await ensure_topics(target)
    plan = plan_import(events, await _existing(target, codec, tasks) if tasks else {})
    if plan.conflicts:
        shown = "; ".join(plan.conflicts[:5])
        more = f" (and {len(plan.conflicts) - 5} more)" if len(plan.conflicts) > 5 else ""
        raise ImportConflictError(
            f"{len(plan.conflicts)} conflicting event(s), nothing imported: {shown}{more}"
        )
    topics = {spec.suffix: spec.name(target) for spec in TASK_TOPICS}
    result = ImportResult(events=len(events), skipped=plan.skipped, tasks=sorted(tasks))
    if on_progress is not None:
        on_progress(0, len(plan.to_produce))
    producer = AIOKafkaProducer(bootstrap_servers=target.kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        pending = []
        for item in plan.to_produce:
            topic = topics.get(item.suffix)
            if topic is None:
                raise ValueError(
                    f"event {item.task_id}/{item.sequence} names topic {item.suffix!r}, not a task topic"
                )
            pending.append(
                await producer.send(
                    topic,
                    value=await _framed(codec, topic, item),
                    key=item.task_id.encode(),
                    headers=[(name, value.encode()) for name, value in item.headers.items()],
                    timestamp_ms=item.timestamp_ms,
                )
            )
            # Acknowledged in chunks: an interrupted import leaves a prefix of each task, which the
            # next run completes (the chain of what is there still verifies up to where it stops).
            if len(pending) >= 500:
                for future in pending:
                    await future
                result.produced += len(pending)
                pending.clear()
                if on_progress is not None:
                    on_progress(result.produced, len(plan.to_produce))
        for future in pending:
            await future
        result.produced += len(pending)
        if on_progress is not None:
            on_progress(result.produced, len(plan.to_produce))
    finally:
        await producer.stop()
    return result
