"""Serde: events encoded / decoded per second on one core, through the platform's codec.

Events are every event of decider-built task histories (the mix the platform writes), and the two
LLM-call events on their own (the goal of issue 4 is >= 100,000/s each way for them). Encode is
``EventCodec.encode`` (model -> Avro body -> Confluent frame with the registry id; ids are cached
after the first call, as in the platform); decode is ``EventCodec.decode`` (unframe -> Avro body ->
models -> SHA-256 digest); seal is what the processor's ``stamp`` pays per event (encode + digest +
the Event). The Avro-only figures are fastavro alone on the same records (what the reference path
pays before any model work).

Rates are events per CPU-second of the measuring thread (``time.thread_time``). Each figure is the
best of several short runs: on a shared machine a run only gets slower when something else takes
the core or its caches (timeit's reasoning), so the best run is the closest to what one core does;
the notes give every figure's spread.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import fastavro
from pydantic import BaseModel

from bench import fixtures as fx
from bench.context import BenchContext
from schemas.events import PAYLOAD_TYPES, Event, LlmCallCompleted, LlmCallRequested, RecordDeadLettered
from schemas.serde import binding_problem, encode_event, parsed_schema, seal, unframe
from streams.topics import EVENTS, REQUESTS

SECTION = "serde"
# Figure-name stem -> the event types measured together ("" is the whole mix).
GROUPS: dict[str, tuple[str, ...]] = {
    "": (),
    "llm_": (LlmCallRequested.record_name, LlmCallCompleted.record_name),
    "llm_requested_": (LlmCallRequested.record_name,),
    "llm_completed_": (LlmCallCompleted.record_name,),
}


async def run(ctx: BenchContext) -> dict[str, float | int | str]:
    settings = fx.section_settings(ctx, SECTION)
    count = ctx.size(full=4_000, quick=1_000)
    repeats = ctx.size(full=15, quick=2)
    events = [event for template in fx.templates(64) for event, _ in template.history.events]
    figures: dict[str, float | int | str] = {}
    spreads: list[str] = []

    def record(name: str, rates: list[float]) -> None:
        figures[name] = round(max(rates))
        spreads.append(f"{name} {min(rates):,.0f}-{max(rates):,.0f}")

    try:
        async with fx.registry(settings) as settings, fx.codec(settings) as c:
            codec = c.codec
            requests, events_topic = REQUESTS.name(settings), EVENTS.name(settings)

            def topic(event: Event) -> str:
                return requests if event.event_type == "TaskSubmitted" else events_topic

            # Warm-up: registers every schema and fills the caches, as a running platform has.
            framed = [await codec.encode(topic(e), e) for e in events]
            if [await codec.decode(value) for value in framed] != events:
                raise AssertionError("decode(encode(event)) differs from the event")
            pairs = list(zip(events, framed, strict=True))
            for stem, types in GROUPS.items():
                chosen = [(e, v) for e, v in pairs if not types or e.event_type in types]
                cycle = list(itertools.islice(itertools.cycle(chosen), count))
                to_encode = [(topic(e), e) for e, _ in cycle]
                values = [v for _, v in cycle]

                async def encode_all(items: list[tuple[str, Event]] = to_encode) -> None:
                    for name, event in items:
                        await codec.encode(name, event)

                async def decode_all(items: list[bytes] = values) -> None:
                    for value in items:
                        await codec.decode(value)

                record(f"serde_{stem}encode_per_s", [await _rate(encode_all, count) for _ in range(repeats)])
                record(f"serde_{stem}decode_per_s", [await _rate(decode_all, count) for _ in range(repeats)])
                sealed = [(e.envelope, e.payload) for e, _ in cycle]
                record(
                    f"serde_{stem}seal_per_s", [_rate_sync(_seal_all, sealed, count) for _ in range(repeats)]
                )
                avro_encode, avro_decode = _avro_only(cycle)
                record(
                    f"serde_{stem}avro_only_encode_per_s",
                    [_rate_sync(_fastavro_write, avro_encode, count) for _ in range(repeats)],
                )
                record(
                    f"serde_{stem}avro_only_decode_per_s",
                    [_rate_sync(_fastavro_read, avro_decode, count) for _ in range(repeats)],
                )
                figures[f"serde_{stem}value_bytes_avg"] = round(statistics.mean(len(v) for v in values))
    finally:
        await asyncio.to_thread(fx.delete_kafka, settings, topics=fx.catalogue_topics(settings))

    figures["serde_events"] = count
    records: list[type[BaseModel]] = [*PAYLOAD_TYPES.values(), RecordDeadLettered]
    uncompiled = {cls.__name__: problem for cls in records if (problem := binding_problem(cls)) is not None}
    ctx.note(
        f"serde: {count} events per measurement cycling over {len(events)} distinct decider-built events "
        f"(mix) or over the LLM-call events among them (llm_*), one thread; events per CPU-second of "
        f"that thread, best of {repeats} runs. encode = EventCodec.encode, decode = "
        "EventCodec.decode (incl. SHA-256 digest and the models), seal = schemas.serde.seal; "
        "avro_only = fastavro schemaless write/read of the same records (schemas parsed once). "
        "Records without a compiled writer/reader (reference path only): "
        + (", ".join(f"{name} ({why})" for name, why in uncompiled.items()) or "none")
        + "."
    )
    ctx.note("serde spread (min-max over the runs): " + "; ".join(spreads))
    return figures


async def _rate(loop: Callable[[], Awaitable[None]], count: int) -> float:
    began = time.thread_time()
    await loop()
    return count / (time.thread_time() - began)


def _rate_sync(loop: Callable[[Any], None], items: Any, count: int) -> float:
    began = time.thread_time()
    loop(items)
    return count / (time.thread_time() - began)


def _seal_all(items: Iterable[tuple[Any, Any]]) -> None:
    for envelope, payload in items:
        seal(envelope, payload)


def _fastavro_write(items: Iterable[tuple[Any, dict[str, Any]]]) -> None:
    for schema, record in items:
        fastavro.schemaless_writer(io.BytesIO(), schema, record)


def _fastavro_read(items: Iterable[tuple[Any, bytes]]) -> None:
    for schema, body in items:
        fastavro.schemaless_reader(io.BytesIO(body), schema, None)


def _avro_only(
    cycle: list[tuple[Event, bytes]],
) -> tuple[list[tuple[Any, dict[str, Any]]], list[tuple[Any, bytes]]]:
    """fastavro alone, on the same records: the floor under the reference path."""
    schemas = {name: fastavro.parse_schema(parsed_schema(name)) for name in PAYLOAD_TYPES}
    records: list[tuple[Any, dict[str, Any]]] = []
    for event, _ in cycle:
        record = event.payload.model_dump(mode="python")
        record["envelope"] = event.envelope.model_dump(mode="python")
        records.append((schemas[event.payload.fullname()], record))
    bodies = [(schema, unframe(value)[1]) for (schema, _), (_, value) in zip(records, cycle, strict=True)]
    written = io.BytesIO()
    fastavro.schemaless_writer(written, records[0][0], records[0][1])
    if written.getvalue() != encode_event(cycle[0][0]):
        raise AssertionError("fastavro does not write the codec's bytes")
    return records, bodies
