"""The task topics read record by record, with what the audit tools need of each: the exact Avro
body and the schema it was written with (the digest is over those bytes), the record's place,
timestamp and headers, and the decoded event.

Reads outside any consumer group, topic by topic and partition by partition in offset order, up to
the ends the read started with, so a task's records come in log order: its submission (requests
topic), then its events (events topic) by offset.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from schemas.codec import EventCodec
from schemas.events import AuditSealed, CheckpointSaved, Event, TaskSubmitted
from schemas.registry.client import RegistryRejected
from schemas.serde import decode_event, is_request, unframe, writer_fullname
from streams.headers import header_map
from streams.history import partition_for
from streams.settings import Settings
from streams.topics import AUDIT, REQUESTS, TASK_STATE, TASK_TOPICS, TopicSpec

ProgressCallback = Callable[[int, int], None]
"""Called with (records read, records to read) as a read goes."""


class TopicMissingError(LookupError):
    """A topic the read needs does not exist (is the topic prefix right?)."""


@dataclass(frozen=True)
class LogRecord:
    """One task event as it is on the log."""

    topic: str
    suffix: str
    """The catalogue suffix of the topic (``tasks.requests`` or ``tasks.events``)."""
    partition: int
    offset: int
    timestamp_ms: int
    headers: dict[str, str]
    writer_schema: str
    body: bytes
    event: Event

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass
class ReadStats:
    records: int = 0
    undecodable: list[str] = field(default_factory=list)
    """Positions of task-topic records that did not decode, or are no part of any history (with
    why)."""


async def _writer_schema(codec: EventCodec, schema_id: int) -> str:
    # The registry client caches every schema it fetched: one request per schema id per process.
    return await codec.registry.schema(schema_id)


async def _partitions(
    consumer: AIOKafkaConsumer, settings: Settings, specs: Sequence[TopicSpec], task_id: str | None
) -> list[TopicPartition]:
    found = []
    for spec in specs:
        topic = spec.name(settings)
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TopicMissingError(f"topic {topic} does not exist (is the topic prefix right?)")
        if task_id is not None:
            found.append(TopicPartition(topic, partition_for(task_id, len(partitions))))
        else:
            found += [TopicPartition(topic, p) for p in sorted(partitions)]
    return found


async def _raw(
    settings: Settings,
    specs: Sequence[TopicSpec],
    *,
    task_id: str | None,
    since: datetime | None,
    stats: ReadStats,
    on_progress: ProgressCallback | None,
    until: datetime | None = None,
) -> AsyncIterator[tuple[TopicPartition, ConsumerRecord]]:
    names = [spec.name(settings) for spec in specs]
    # Subscribing (without a group) loads the topics' metadata at start; partitions are then assigned
    # by hand, one at a time (as streams.history does).
    consumer = AIOKafkaConsumer(
        *names,
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = await _partitions(consumer, settings, specs, task_id)
        consumer.unsubscribe()
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = dict(await consumer.beginning_offsets(partitions))
        if since is not None:
            stamp = int(since.timestamp() * 1000)
            found = await consumer.offsets_for_times(dict.fromkeys(partitions, stamp))
            starts = {tp: found[tp].offset if found.get(tp) is not None else ends[tp] for tp in partitions}
        if until is not None:
            stamp = int(until.timestamp() * 1000)
            found = await consumer.offsets_for_times(dict.fromkeys(partitions, stamp))
            ends = {tp: found[tp].offset if found.get(tp) is not None else ends[tp] for tp in partitions}
        total = sum(max(0, ends[tp] - starts[tp]) for tp in partitions)
        if on_progress is not None:
            on_progress(0, total)
        # One assignment for the whole read, one partition fetched at a time: re-assigning between
        # partitions left aiokafka's stop() waiting forever on a cancelled fetch.
        consumer.pause(*partitions)
        for tp in partitions:
            if starts[tp] >= ends[tp]:
                continue
            # Explicit offsets: aiokafka's lazy seek_to_beginning, after end_offsets, lands at the end.
            consumer.seek(tp, starts[tp])
            consumer.resume(tp)
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
                for record in batch.get(tp, []):
                    if record.offset >= ends[tp]:
                        break
                    stats.records += 1
                    yield tp, record
                if on_progress is not None:
                    on_progress(stats.records, total)
            consumer.pause(tp)
    finally:
        await consumer.stop()


async def read_events(
    settings: Settings,
    codec: EventCodec,
    *,
    task_id: str | None = None,
    org: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    stats: ReadStats | None = None,
    on_progress: ProgressCallback | None = None,
) -> AsyncIterator[LogRecord]:
    """Every task event on the task topics (of one task, of one org, written from ``since`` and
    before ``until``: the records' timestamps), in log order.

    Requests to running tasks are not events and are skipped; a record of the scope that does not
    decode is counted in ``stats.undecodable`` (it is evidence too: the caller reports it).
    """
    stats = stats if stats is not None else ReadStats()
    key = task_id.encode() if task_id is not None else None
    suffixes = {spec.name(settings): spec.suffix for spec in TASK_TOPICS}
    requests_topic = REQUESTS.name(settings)
    async for tp, record in _raw(
        settings, TASK_TOPICS, task_id=task_id, since=since, until=until, stats=stats, on_progress=on_progress
    ):
        if key is not None and record.key != key:
            continue
        position = f"{tp.topic}:{tp.partition}:{record.offset}"
        try:
            schema_id, body = unframe(record.value)
            writer = await _writer_schema(codec, schema_id)
            if is_request(writer):
                continue
            event = decode_event(body, writer)
        except RegistryRejected as exc:
            if exc.status != 404:
                raise
            stats.undecodable.append(f"{position}: schema id unknown to the registry")
            continue
        except ValueError as exc:
            stats.undecodable.append(f"{position}: {type(exc).__name__}: {exc}")
            continue
        if tp.topic == requests_topic and not isinstance(event.payload, TaskSubmitted):
            # Only submissions begin histories on the requests topic; anything else written there
            # was refused by the processor and parked in the dead-letter topic with the reason.
            stats.undecodable.append(f"{position}: {event.event_type} on the requests topic (dead-lettered)")
            continue
        if org is not None and event.envelope.org_id != org:
            continue
        yield LogRecord(
            topic=tp.topic,
            suffix=suffixes[tp.topic],
            partition=tp.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            headers=header_map(record.headers),
            writer_schema=writer,
            body=body,
            event=event,
        )


async def read_checkpoints(
    settings: Settings, codec: EventCodec, *, task_id: str | None = None
) -> dict[str, dict[int, str]]:
    """task id -> sequence -> digest that the processor's checkpoints (``CheckpointSaved``) vouch
    for: each checkpoint names the last event its state includes and carries that event's digest."""
    attested: dict[str, dict[int, str]] = {}
    key = task_id.encode() if task_id is not None else None
    async for _, record in _raw(
        settings, (TASK_STATE,), task_id=task_id, since=None, stats=ReadStats(), on_progress=None
    ):
        if (key is not None and record.key != key) or record.value is None:
            continue
        try:
            checkpoint = await codec.decode(record.value)
        except (ValueError, LookupError, RegistryRejected):
            continue  # the processor parks what it cannot read; a checkpoint only adds evidence
        if isinstance(checkpoint.payload, CheckpointSaved) and checkpoint.envelope.prev_hash is not None:
            attested.setdefault(checkpoint.task_id, {})[checkpoint.sequence] = checkpoint.envelope.prev_hash
    return attested


async def read_seals(settings: Settings, codec: EventCodec) -> list[AuditSealed]:
    """Every ``AuditSealed`` record on the audit topic, in log order (none if the topic is missing)."""
    from audit.seal import decode_seal

    seals: list[AuditSealed] = []
    try:
        async for _, record in _raw(
            settings, (AUDIT,), task_id=None, since=None, stats=ReadStats(), on_progress=None
        ):
            schema_id, body = unframe(record.value)
            writer = await _writer_schema(codec, schema_id)
            if writer_fullname(writer) == AuditSealed.fullname():
                seals.append(decode_seal(body, writer))
    except TopicMissingError:
        return []
    return seals
