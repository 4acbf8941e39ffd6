"""Serde: encode / decode events per second on one core, through the platform's codec.

Events are every event of decider-built task histories (the mix the platform writes). Encode is
``EventCodec.encode`` (pydantic dump -> fastavro -> Confluent frame with the registry id; ids are
cached after the first call, as in the platform); decode is ``EventCodec.decode`` (unframe ->
fastavro -> pydantic validation -> SHA-256 digest). One thread, so events/s is per core. The Avro-only
figures (fastavro alone on the same records) show how much of each is the model layer.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from typing import Any

import fastavro

from bench import fixtures as fx
from bench.context import BenchContext
from schemas.events import PAYLOAD_TYPES, Event
from schemas.serde import encode_event, parsed_schema, seal, unframe
from streams.topics import EVENTS, REQUESTS

SECTION = "serde"


async def run(ctx: BenchContext) -> dict[str, float | int | str]:
    settings = fx.section_settings(ctx, SECTION)
    count = ctx.size(full=50_000, quick=10_000)
    events = [event for template in fx.templates(64) for event, _ in template.history.events]
    figures: dict[str, float | int | str] = {}
    try:
        async with fx.registry(settings) as settings, fx.codec(settings) as c:
            codec = c.codec

            def topic(event: Event) -> str:
                return (REQUESTS if event.event_type == "TaskSubmitted" else EVENTS).name(settings)

            # Warm-up: registers every schema and fills the client's caches, as a running platform has.
            framed = [await codec.encode(topic(e), e) for e in events]
            if [await codec.decode(value) for value in framed] != events:
                raise AssertionError("decode(encode(event)) differs from the event")
            cycle = list(itertools.islice(itertools.cycle(zip(events, framed, strict=True)), count))

            began = time.perf_counter()
            for event, _ in cycle:
                await codec.encode(topic(event), event)
            encode_s = time.perf_counter() - began

            began = time.perf_counter()
            for _, value in cycle:
                await codec.decode(value)
            decode_s = time.perf_counter() - began
    finally:
        await asyncio.to_thread(fx.delete_kafka, settings, topics=fx.catalogue_topics(settings))

    # What stamp() pays per event: encode + SHA-256 + the Event model (the processor's write path).
    began = time.perf_counter()
    for event, _ in cycle:
        seal(event.envelope, event.payload)
    seal_s = time.perf_counter() - began

    avro_encode_s, avro_decode_s = _avro_only(cycle)
    size = sum(len(value) for _, value in cycle) / len(cycle)
    figures |= {
        "serde_encode_per_s": round(count / encode_s),
        "serde_decode_per_s": round(count / decode_s),
        "serde_seal_per_s": round(count / seal_s),
        "serde_avro_only_encode_per_s": round(count / avro_encode_s),
        "serde_avro_only_decode_per_s": round(count / avro_decode_s),
        "serde_events": count,
        "serde_value_bytes_avg": round(size),
    }
    ctx.note(
        f"serde: {count} events cycling over {len(events)} distinct decider-built events (avg {size:.0f} B "
        "framed), one thread. encode = EventCodec.encode, decode = EventCodec.decode (incl. SHA-256 "
        "digest and pydantic validation); avro_only = fastavro schemaless write/read of the same "
        "records with schemas parsed once by fastavro.parse_schema. schemas.serde._write passes fastavro "
        "the unmarked load_schema() dict, which fastavro re-parses on every write: that is most of the "
        "gap between serde_encode and serde_avro_only_encode."
    )
    return figures


def _avro_only(cycle: list[tuple[Event, bytes]]) -> tuple[float, float]:
    """fastavro alone: the floor under the codec, on the same records."""
    # Parsed once with fastavro.parse_schema (which marks it parsed); schemas.serde hands fastavro
    # the unmarked load_schema() result, which fastavro parses again on every write.
    schemas = {name: fastavro.parse_schema(parsed_schema(name)) for name in PAYLOAD_TYPES}
    records: list[tuple[Any, dict[str, Any]]] = []
    for event, _ in cycle:
        record = event.payload.model_dump(mode="python")
        record["envelope"] = event.envelope.model_dump(mode="python")
        records.append((schemas[event.payload.fullname()], record))
    bodies = [unframe(value)[1] for _, value in cycle]
    began = time.perf_counter()
    for schema, record in records:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, record)
    encode_s = time.perf_counter() - began
    began = time.perf_counter()
    for (schema, _), body in zip(records, bodies, strict=True):
        fastavro.schemaless_reader(io.BytesIO(body), schema, None)
    decode_s = time.perf_counter() - began
    if encode_event(cycle[0][0]) != bodies[0]:
        raise AssertionError("the Avro-only path does not write the codec's bytes")
    return encode_s, decode_s
