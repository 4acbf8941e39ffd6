"""Reads one task's history back from the log (both task topics), in sequence order."""

from __future__ import annotations

from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from schemas.codec import EventCodec
from schemas.events import Event
from streams.settings import Settings
from streams.topics import TASK_TOPICS


class TaskNotFoundError(LookupError):
    """No event of the task is on the log."""


def partition_for(task_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java client) gives the task's key."""
    return int(DefaultPartitioner()(task_id.encode(), list(range(partitions)), []))


async def read_task_events(
    settings: Settings, codec: EventCodec, task_id: str, *, since: datetime | None = None
) -> list[Event]:
    """Every event of ``task_id`` on the log, deduplicated by sequence and ordered by it.

    Scans the task's partition of each task topic from the start (the log is the source of truth,
    not the read models), or, with ``since``, from the first record written at or after that time
    (what a recovering worker needs after its checkpoint); an empty list then is not an error.
    """
    names = [spec.name(settings) for spec in TASK_TOPICS]
    # Subscribing (without a group) makes the client load these topics' metadata at start; the
    # partitions are then assigned by hand, one at a time.
    consumer = AIOKafkaConsumer(*names, bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[int, Event] = {}
    key = task_id.encode()
    try:
        partition_counts = {topic: len(consumer.partitions_for_topic(topic) or ()) for topic in names}
        consumer.unsubscribe()
        for topic, count in partition_counts.items():
            if not count:
                raise TaskNotFoundError(f"topic {topic} does not exist")
            tp = TopicPartition(topic, partition_for(task_id, count))
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            # Explicit offsets: aiokafka's lazy seek_to_beginning, after end_offsets, lands at the end.
            start = (await consumer.beginning_offsets([tp]))[tp]
            if since is not None:
                found_at = (await consumer.offsets_for_times({tp: int(since.timestamp() * 1000)}))[tp]
                start = found_at.offset if found_at is not None else end
            consumer.seek(tp, start)
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
                for record in batch.get(tp, []):
                    if record.key == key:
                        # The requests topic also carries requests to the task (cancellation,
                        # approval decisions) under its key: they are not events of its history.
                        event = await codec.decode_record(record.value)
                        if isinstance(event, Event):
                            found.setdefault(event.sequence, event)
    finally:
        await consumer.stop()
    if not found and since is None:
        raise TaskNotFoundError(f"no events of task {task_id} on the log")
    return [found[sequence] for sequence in sorted(found)]
