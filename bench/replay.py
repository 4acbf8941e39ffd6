"""Replay: folding a 10,000-event task history, in memory and read back from Kafka.

The history is one long-running task built with the pure decider (valid sequence and hash chain).
``replay_fold`` is ``decider.fold`` over the decoded events (pure CPU: what crash recovery and
time-travel cost per event). ``replay_read_decode_fold`` is what ``agentlog replay`` does before
printing: ``streams.history.read_task_events`` (scan the task's partition of both task topics,
decode through the registry codec) and then the fold, timed end to end. ``replay_topic_*`` replays
a whole log: every record of both task topics (the long task and 400 typical ones) read, decoded,
grouped by task and each task's history folded, as an audit of every task would.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import fixtures as fx
from bench.context import BenchContext
from processors.task.decider import Status, TaskState, fold
from schemas.codec import EventCodec
from schemas.events import Event, LlmCallCompleted, LlmCallRequested
from streams.history import read_task_events
from streams.settings import Settings
from streams.topics import TASK_TOPICS

SECTION = "replay"


async def run(ctx: BenchContext) -> dict[str, float | int | str]:
    settings = fx.section_settings(ctx, SECTION)
    size = ctx.size(full=10_000, quick=2_000)
    started = datetime.now(UTC).replace(microsecond=0)
    typical = [
        h.events
        for h in (fx.build_task(str(uuid.uuid4()), n, fx.SHAPES[n % 8], started=started) for n in range(400))
    ]
    typical_events = sum(len(h) for h in typical)
    began = time.perf_counter()
    for history in typical:
        fold(event for event, _ in history)
    typical_s = time.perf_counter() - began

    task_id = str(uuid.uuid4())
    stamped = fx.long_task(task_id, size, started=started)
    events = [event for event, _ in stamped]
    history_bytes = sum(len(body) for _, body in stamped)
    steps = sum(1 for event in events if event.event_type == "LlmCallRequested")

    began = time.perf_counter()
    state = fold(events)
    fold_s = time.perf_counter() - began
    _check(state, events)
    # The share of the fold that is evolve's json.loads of the messages each LLM event adds.
    began = time.perf_counter()
    for event in events:
        if isinstance(event.payload, LlmCallRequested):
            json.loads(event.payload.messages_json)
        elif isinstance(event.payload, LlmCallCompleted):
            json.loads(event.payload.tool_calls_json)
    json_s = time.perf_counter() - began

    try:
        async with fx.registry(settings) as settings, fx.codec(settings) as codec:
            await fx.prepare_frames(settings, codec)
            await asyncio.to_thread(fx.produce_fast, settings, codec.frames, fx.records_of(stamped))
            began = time.perf_counter()
            read = await read_task_events(settings, codec.codec, task_id)
            read_s = time.perf_counter() - began
            replayed = fold(read)
            total_s = time.perf_counter() - began
            await asyncio.to_thread(
                fx.produce_fast, settings, codec.frames, fx.records_of(e for h in typical for e in h)
            )
            began = time.perf_counter()
            topic_tasks, topic_events = await fold_topics(settings, codec.codec)
            topic_s = time.perf_counter() - began
    finally:
        await asyncio.to_thread(fx.delete_kafka, settings, topics=fx.catalogue_topics(settings))
    if len(read) != size or replayed != state:
        raise AssertionError(f"replay read {len(read)} of {size} events, or folded to another state")
    if (topic_tasks, topic_events) != (len(typical) + 1, size + typical_events):
        raise AssertionError(f"topic replay folded {topic_events} events of {topic_tasks} tasks")

    ctx.note(
        f"replay: one task of {size} events (decider-built: {steps} steps of 50 parallel calculator calls, "
        f"{history_bytes / 1e6:.0f} MB of Avro). Every LlmCallRequested carries the whole conversation, so "
        "a history's size, and the fold's json.loads of it, grows with the square of its length: the "
        "per-event rate of a long task is far below that of typical 13-23-event tasks "
        "(replay_fold_typical_events_per_s). read_decode_fold = streams.history.read_task_events "
        "(what `agentlog replay` reads) + fold, on topics holding only this task. replay_topic = every "
        f"record of both task topics ({topic_tasks} tasks, {topic_events} events: the long task and "
        f"{len(typical)} typical ones) read, decoded, grouped by task and each history folded."
    )
    return {
        "replay_fold_events_per_s": round(size / fold_s, 1),
        "replay_read_decode_fold_events_per_s": round(size / total_s, 1),
        "replay_read_decode_events_per_s": round(size / read_s, 1),
        "replay_fold_typical_events_per_s": round(typical_events / typical_s, 1),
        "replay_events": size,
        "replay_history_mb": round(history_bytes / 1e6, 1),
        "replay_fold_json_share": round(json_s / fold_s, 2),
        "replay_topic_read_decode_fold_events_per_s": round(topic_events / topic_s, 1),
        "replay_topic_tasks": topic_tasks,
        "replay_topic_events": topic_events,
    }


async def fold_topics(settings: Settings, codec: EventCodec) -> tuple[int, int]:
    """Replay every task on the task topics: read each partition from its start to its current end,
    decode, group by task (deduplicated by sequence) and fold each history in order. Returns the
    number of tasks and of events folded."""
    names = [spec.name(settings) for spec in TASK_TOPICS]
    # Subscribing (without a group) loads the topics' metadata; the partitions are then assigned.
    consumer = AIOKafkaConsumer(*names, bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    histories: dict[bytes | None, dict[int, Event]] = defaultdict(dict)
    try:
        partitions = [
            TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        consumer.unsubscribe()
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        remaining = {tp for tp in partitions if ends[tp] > starts[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    event = await codec.decode(record.value)
                    histories[record.key].setdefault(event.sequence, event)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    for history in histories.values():
        fold(history[sequence] for sequence in sorted(history))
    return len(histories), sum(len(history) for history in histories.values())


def _check(state: TaskState, events: list) -> None:  # type: ignore[type-arg]
    """The fold must reach the end of the history: last sequence, last digest, still running."""
    last = events[-1]
    if (state.sequence, state.last_digest, state.status) != (last.sequence, last.digest, Status.RUNNING):
        raise AssertionError(f"fold ended at {state.sequence}/{state.status}, history at {last.sequence}")
