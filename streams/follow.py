"""Follows one task's events on the log as they are written: what the live views (SSE, WebSocket) read.

Like :func:`streams.history.read_task_events` this reads the log, not the read models, with a
consumer that joins no group (partitions are assigned by hand, so a stream never triggers a
rebalance and leaves no group behind). Unlike it, it starts at an offset the caller already knows
(the read model keeps each event's offset) and then waits for new records: a stream reads the
task's partition once, from the task's position onwards, instead of rescanning it per event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import EventCodec
from schemas.events import TERMINAL_TYPES, Event
from streams.history import TaskNotFoundError, partition_for
from streams.settings import Settings
from streams.topics import EVENTS, REQUESTS

log = logging.getLogger(__name__)

# Records carry their producer's clock; a lower bound by time allows this much skew between the
# machine that stamped the submission and the ones that write the task's events.
CLOCK_SKEW = timedelta(minutes=1)
_POLL_MS = 500
_MAX_RECORDS = 500


@dataclass(frozen=True)
class TaskLogStart:
    """Where a task's records are known to begin on the log.

    The offsets come from the read model (``task_events.kafka_offset``): ``submission_offset`` is
    the submission's on the requests topic, ``events_offset`` that of an event on the events topic
    at or before the first one the reader still needs. Unknown offsets (not projected yet) fall
    back to ``not_before`` (when the task was submitted), then to the partition's beginning.
    """

    submission_offset: int | None = None
    events_offset: int | None = None
    not_before: datetime | None = None


async def follow_task_events(
    settings: Settings,
    codec: EventCodec,
    task_id: str,
    *,
    after_sequence: int = -1,
    start: TaskLogStart | None = None,
) -> AsyncGenerator[Event, None]:
    """Yields the events of ``task_id`` with a sequence above ``after_sequence``: first those
    already on the log, then each new one as it is written; each sequence once, in log order.

    The first copy of each sequence is on the log in sequence order (one writer per task), so a
    record whose sequence is not above the last one yielded is an at-least-once duplicate and is
    dropped. The iterator ends after the task's terminal event (also when that event was already
    behind ``after_sequence``); otherwise it waits for more, so bound it with a timeout.
    """
    start = start or TaskLogStart()
    names = [REQUESTS.name(settings), EVENTS.name(settings)]
    # Naming the topics makes the client load their metadata at start (no group is joined: there
    # is no group_id); the partitions are then assigned by hand.
    consumer = AIOKafkaConsumer(
        *names,
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        counts = {topic: len(consumer.partitions_for_topic(topic) or ()) for topic in names}
        consumer.unsubscribe()
        for topic, count in counts.items():
            if not count:
                raise TaskNotFoundError(f"topic {topic} does not exist")
        requests_tp, events_tp = (TopicPartition(t, partition_for(task_id, counts[t])) for t in names)
        key = task_id.encode()
        last = after_sequence
        if after_sequence < 0:
            # The submission is on the other topic; the processor writes the events only after
            # reading it, so yielding it first keeps sequence order.
            submission = await _submission(consumer, codec, requests_tp, key, start)
            if submission is not None:
                yield submission
                last = submission.sequence
            else:
                log.warning("the submission of task %s is not on %s", task_id, requests_tp)
        consumer.assign([events_tp])
        consumer.seek(events_tp, await _start_offset(consumer, events_tp, start.events_offset, start))
        while True:
            batch = await consumer.getmany(events_tp, timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
            for record in batch.get(events_tp, []):
                if record.key != key:
                    continue
                event = await _decoded(codec, record.value, events_tp, record.offset)
                if event is None:
                    continue
                if event.sequence > last:
                    last = event.sequence
                    yield event
                if event.event_type in TERMINAL_TYPES:
                    return
    finally:
        await consumer.stop()


async def _start_offset(
    consumer: AIOKafkaConsumer, tp: TopicPartition, known: int | None, start: TaskLogStart
) -> int:
    if known is not None:
        return known
    # The end first: if no record is at or after the time, nothing of the task can be before this
    # end, and a record written meanwhile lands after it (so is not skipped).
    end = (await consumer.end_offsets([tp]))[tp]
    if start.not_before is None:
        # Explicit offsets: aiokafka's lazy seek_to_beginning, after end_offsets, lands at the end.
        return int((await consumer.beginning_offsets([tp]))[tp])
    millis = int((start.not_before - CLOCK_SKEW).timestamp() * 1000)
    found = (await consumer.offsets_for_times({tp: millis}))[tp]
    return int(found.offset) if found is not None else int(end)


async def _submission(
    consumer: AIOKafkaConsumer, codec: EventCodec, tp: TopicPartition, key: bytes, start: TaskLogStart
) -> Event | None:
    """The task's ``TaskSubmitted`` (sequence 0) on the requests topic, or None if it is not there."""
    consumer.assign([tp])
    end = (await consumer.end_offsets([tp]))[tp]
    consumer.seek(tp, await _start_offset(consumer, tp, start.submission_offset, start))
    # Bounded by the end at the start: the submission precedes the task's view, so it is there.
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=_MAX_RECORDS)
        for record in batch.get(tp, []):
            if record.key != key or record.offset >= end:
                continue
            try:
                decoded = await codec.decode_record(record.value)
            except Exception:
                log.warning("undecodable record at %s@%d skipped", tp, record.offset, exc_info=True)
                continue
            # Requests to the task (cancellation, approval decisions) share the key; they are not
            # events of its history.
            if isinstance(decoded, Event) and decoded.sequence == 0:
                return decoded
    return None


async def _decoded(codec: EventCodec, value: bytes | None, tp: TopicPartition, offset: int) -> Event | None:
    try:
        return await codec.decode(value)
    except Exception:
        # The projectors dead-letter such a record; a live view skips it rather than end the
        # stream, and says where it was.
        log.warning("undecodable record at %s@%d skipped", tp, offset, exc_info=True)
        return None
