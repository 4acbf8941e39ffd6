"""Replay: folding a 10,000-event task history, in memory and read back from Kafka.

The history is one long-running task built with the pure decider (valid sequence and hash chain).
``replay_fold`` is ``decider.fold`` over the decoded events (pure CPU: what crash recovery and
time-travel cost per event). ``replay_read_decode_fold`` is what ``agentlog replay`` does before
printing: ``streams.history.read_task_events`` (scan the task's partition of both task topics,
decode through the registry codec) and then the fold, timed end to end.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

from bench import fixtures as fx
from bench.context import BenchContext
from processors.task.decider import Status, TaskState, fold
from schemas.events import LlmCallCompleted, LlmCallRequested
from streams.history import read_task_events

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
    finally:
        await asyncio.to_thread(fx.delete_kafka, settings, topics=fx.catalogue_topics(settings))
    if len(read) != size or replayed != state:
        raise AssertionError(f"replay read {len(read)} of {size} events, or folded to another state")

    ctx.note(
        f"replay: one task of {size} events (decider-built: {steps} steps of 50 parallel calculator calls, "
        f"{history_bytes / 1e6:.0f} MB of Avro). Every LlmCallRequested carries the whole conversation, so "
        "a history's size, and the fold's json.loads of it, grows with the square of its length: the "
        "per-event rate of a long task is far below that of typical 13-23-event tasks "
        "(replay_fold_typical_events_per_s). read_decode_fold = streams.history.read_task_events "
        "(what `agentlog replay` reads) + fold, on topics holding only this task."
    )
    return {
        "replay_fold_events_per_s": round(size / fold_s, 1),
        "replay_read_decode_fold_events_per_s": round(size / total_s, 1),
        "replay_read_decode_events_per_s": round(size / read_s, 1),
        "replay_fold_typical_events_per_s": round(typical_events / typical_s, 1),
        "replay_events": size,
        "replay_history_mb": round(history_bytes / 1e6, 1),
        "replay_fold_json_share": round(json_s / fold_s, 2),
    }


def _check(state: TaskState, events: list) -> None:  # type: ignore[type-arg]
    """The fold must reach the end of the history: last sequence, last digest, still running."""
    last = events[-1]
    if (state.sequence, state.last_digest, state.status) != (last.sequence, last.digest, Status.RUNNING):
        raise AssertionError(f"fold ended at {state.sequence}/{state.status}, history at {last.sequence}")
