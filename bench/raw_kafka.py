"""Machine limit, raw: produce + consume of agentlog's own records through the local Kafka, no processing.

The ceiling the platform is measured against. The records are the ones the platform writes on its
events topic (Confluent-framed Avro bodies of decider-built task histories, task-id keys, the
CloudEvents headers), so the only thing left out is agentlog's work on them. Producer and consumer
run at the same time on a fresh 6-partition topic (like the task topics); events/s = N / (first send
-> last record consumed). Producer durability as the platform's: acks=all with idempotence (the
acks=1 figures are extra: on a one-broker cluster the in-sync replica set is the leader alone, so
they mostly show the cost of idempotence).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition

from bench import fixtures as fx
from bench.context import BenchContext
from streams.settings import Settings

SECTION = "raw"
PARTITIONS = 6
KafkaRecord = tuple[bytes, bytes, list[tuple[str, bytes]]]  # key, value, headers


async def run(ctx: BenchContext) -> dict[str, float | int | str]:
    settings = fx.section_settings(ctx, SECTION)
    count = ctx.size(full=400_000, quick=20_000)
    topics = {
        (client, acks): f"{settings.topic_prefix}.raw-{client}-acks{acks}"
        for client in ("aiokafka", "confluent")
        for acks in ("all", "1")
    }
    figures: dict[str, float | int | str] = {}
    try:
        async with fx.registry(settings) as settings, fx.codec(settings) as codec:
            await fx.prepare_frames(settings, codec)
            pool = _record_pool(settings, codec.frames, min(count, 50_000))
        for topic in topics.values():
            await asyncio.to_thread(fx.create_topic, settings, topic, PARTITIONS)
        for (client, acks), topic in topics.items():
            if client == "aiokafka":
                seconds = await _aiokafka(settings, topic, pool, count, acks)
            else:
                seconds = await asyncio.to_thread(_confluent, settings, topic, pool, count, acks)
            ends = await fx.end_offsets(settings, [topic])
            if ends[topic] != count:
                raise AssertionError(f"{topic} holds {ends[topic]} records, {count} were sent")
            name = f"raw_{client}_events_per_s" if acks == "all" else f"raw_{client}_acks1_events_per_s"
            figures[name] = round(count / seconds, 1)
    finally:
        await asyncio.to_thread(
            fx.delete_kafka, settings, topics=[*topics.values(), *fx.catalogue_topics(settings)]
        )
    value_bytes = sum(len(v) for _, v, _ in pool) / len(pool)
    header_bytes = sum(len(n) + len(v) for _, _, h in pool for n, v in h) / len(pool)
    figures |= {
        "raw_events": count,
        "raw_value_bytes_avg": round(value_bytes),
        "raw_header_bytes_avg": round(header_bytes),
    }
    ctx.note(
        f"raw: {count} records per run, values = every event of decider-built task histories "
        f"(avg {value_bytes:.0f} B Avro + {header_bytes:.0f} B of CloudEvents headers; LlmCallCompleted "
        "with a full OpenAI response is ~1.2 kB, tool events ~400 B), keyed by task id. aiokafka producer "
        "configured as streams/producer.py (acks=all, idempotent, linger 2 ms); confluent-kafka with "
        "librdkafka defaults plus acks=all + idempotence. Consumers assign all partitions (no group), "
        "read_committed; confluent runs producer and consumer in two threads of this process."
    )
    return figures


def _record_pool(settings: Settings, frames: dict[tuple[str, str], bytes], size: int) -> list[KafkaRecord]:
    """Distinct framed records of realistic histories, as the platform would put them on its topics."""
    topics = fx.topic_names(settings)
    backlog = fx.Backlog()
    return [
        (r.key, frames[(topics[r.kind], r.fullname)] + r.body, r.headers)
        for r in fx.backlog_records(fx.templates(), size, backlog)
    ][:size]


async def _aiokafka(
    settings: Settings, topic: str, pool: Sequence[KafkaRecord], count: int, acks: str
) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all" if acks == "all" else 1,
        enable_idempotence=acks == "all",
        linger_ms=2,
    )
    await consumer.start()
    await producer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolve now, so the first fetch is not delayed by it

        async def consume() -> tuple[float, int]:
            received = 0
            deadline = time.perf_counter() + 300
            while received < count:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                received += sum(len(records) for records in batch.values())
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"aiokafka consumer got {received} of {count} records")
            return time.perf_counter(), received

        consuming = asyncio.create_task(consume())
        began = time.perf_counter()
        pending = []
        for key, value, headers in itertools.islice(itertools.cycle(pool), count):
            pending.append(await producer.send(topic, value=value, key=key, headers=headers))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)  # raises on any failed delivery
                pending.clear()
        await asyncio.gather(*pending)
        finished, received = await consuming
    finally:
        await producer.stop()
        await consumer.stop()
    if received != count:
        raise AssertionError(f"aiokafka consumed {received} records, {count} were sent")
    return finished - began


def _confluent(settings: Settings, topic: str, pool: Sequence[KafkaRecord], count: int, acks: str) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"{topic}-reader",  # required by librdkafka; never joined (assign, no commits)
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "log_level": 3,
        }
    )
    consumer.assign([CTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "acks": "all" if acks == "all" else "1",
            "enable.idempotence": acks == "all",
        }
    )
    errors: list[str] = []
    outcome: dict[str, float] = {}

    def consume() -> None:
        received = 0
        deadline = time.perf_counter() + 300
        try:
            while received < count and time.perf_counter() < deadline:
                for message in consumer.consume(num_messages=10_000, timeout=1.0):
                    if message.error() is not None:
                        errors.append(str(message.error()))
                    else:
                        received += 1
            outcome["finished"], outcome["received"] = time.perf_counter(), received
        finally:
            consumer.close()

    def delivered(err: object, _message: object) -> None:
        if err is not None:
            errors.append(str(err))

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    began = time.perf_counter()
    for key, value, headers in itertools.islice(itertools.cycle(pool), count):
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    remaining = producer.flush(60)
    reader.join(320)
    if remaining or errors or outcome.get("received") != count:
        raise AssertionError(
            f"confluent-kafka: {outcome.get('received')} of {count} consumed, {remaining} unacknowledged, "
            f"errors {errors[:3]}"
        )
    return outcome["finished"] - began
