"""Every task's history from the log: both task topics scanned once, events grouped by task id.

For audit tools that look at many tasks (``agentlog reexecute --all``). One task's history is
``streams.history.read_task_events``. The histories are held in memory, grouped by task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import EventCodec
from schemas.events import Event, TaskSubmitted
from schemas.registry.client import RegistryUnavailable
from streams.settings import Settings
from streams.topics import REQUESTS, TASK_TOPICS

Progress = Callable[[int, int], None]  # (records read, records to read)


@dataclass
class LogHistories:
    """What a scan found: each task's events in sequence order (deduplicated)."""

    histories: dict[str, list[Event]] = field(default_factory=dict)
    interrupted: bool = False  # ``stop`` ended the scan early
    undecodable: int = 0  # records that are no task event (dead-lettered by the processor)


async def read_all_histories(
    settings: Settings,
    codec: EventCodec,
    *,
    since: datetime | None = None,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> LogHistories:
    """Every task's history on the log; ``stop`` is asked between batches and ends the scan early.

    Requests to running tasks (cancellations, approval decisions) on the requests topic are not
    events and are skipped; so are records that do not decode.

    With ``since``, only tasks submitted at or after it: each partition is read from the first
    record written then, and a task whose submission (sequence 0) was not among those is left out
    (its history would be incomplete).
    """
    names = [spec.name(settings) for spec in TASK_TOPICS]
    requests_topic = REQUESTS.name(settings)
    consumer = AIOKafkaConsumer(*names, bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[str, dict[int, Event]] = {}
    result = LogHistories()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in names
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.unsubscribe()
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        if since is not None:
            millis = int(since.timestamp() * 1000)
            at = await consumer.offsets_for_times(dict.fromkeys(partitions, millis))
            starts = {
                tp: (found_at.offset if found_at is not None else ends[tp]) for tp, found_at in at.items()
            }
        total = sum(max(ends[tp] - starts[tp], 0) for tp in partitions)
        done = 0
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        remaining = {tp for tp in partitions if starts[tp] < ends[tp]}
        while remaining:
            if stop is not None and stop():
                result.interrupted = True
                break
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    try:
                        event = await codec.decode_record(record.value)
                    except RegistryUnavailable:
                        raise
                    except Exception:  # a bad record: the processor dead-lettered it
                        result.undecodable += 1
                        continue
                    if not isinstance(event, Event):
                        continue
                    if tp.topic == requests_topic and not isinstance(event.payload, TaskSubmitted):
                        # Only submissions begin histories there; the processor parked this one.
                        result.undecodable += 1
                        continue
                    found.setdefault(event.task_id, {}).setdefault(event.sequence, event)
                done += len(records)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if progress is not None:
                progress(min(done, total), total)
    finally:
        await consumer.stop()
    result.histories = {
        task_id: [events[sequence] for sequence in sorted(events)]
        for task_id, events in found.items()
        if since is None or 0 in events
    }
    return result
