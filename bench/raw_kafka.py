"""Machine limit, raw: produce + consume of agentlog's own records through the local Kafka, no processing.

The ceiling the platform is measured against. The records are the ones the platform writes on its
events topic (Confluent-framed Avro bodies of decider-built task histories, task-id keys, the
CloudEvents headers), so the only thing left out is agentlog's work on them. Producer and consumer
run at the same time, on a fresh 6-partition topic (like the task topics), in two processes as the
platform's producers and consumers are (the one-process aiokafka figure is extra); events/s =
N / (first send -> last record consumed), both instants on the system-wide monotonic clock.
Producer durability as the platform's: acks=all with idempotence. The acks=1 figures are extra: on a
one-broker cluster the in-sync replica set is the leader alone, so they mostly show what
idempotence costs.

``python -m bench.raw_kafka CLIENT BOOTSTRAP TOPIC COUNT`` is the consumer child: it prints
``ready`` once its partitions are assigned, then one JSON line (finish time, records received).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition

from bench import fixtures as fx
from bench.context import REPO, BenchContext
from streams.settings import Settings

SECTION = "raw"
PARTITIONS = 6
TIMEOUT_S = 300.0
KafkaRecord = tuple[bytes, bytes, list[tuple[str, bytes]]]  # key, value, headers
# (client, acks, consumer in its own process) -> figure name
RUNS: dict[tuple[str, str, bool], str] = {
    ("aiokafka", "all", True): "raw_aiokafka_events_per_s",
    ("confluent", "all", True): "raw_confluent_events_per_s",
    ("aiokafka", "1", True): "raw_aiokafka_acks1_events_per_s",
    ("confluent", "1", True): "raw_confluent_acks1_events_per_s",
    ("aiokafka", "all", False): "raw_aiokafka_one_process_events_per_s",
}


async def run(ctx: BenchContext) -> dict[str, float | int | str]:
    settings = fx.section_settings(ctx, SECTION)
    count = ctx.size(full=200_000, quick=20_000)
    # The extras (acks=1, one process) only in full mode: quick mode keeps to the two ceilings.
    runs = [key for key in RUNS if not ctx.quick or (key[1] == "all" and key[2])]
    topics = {key: f"{settings.topic_prefix}.{RUNS[key].removesuffix('_events_per_s')}" for key in runs}
    figures: dict[str, float | int | str] = {}
    try:
        async with fx.registry(settings) as settings, fx.codec(settings) as codec:
            await fx.prepare_frames(settings, codec)
            pool = _record_pool(settings, codec.frames, min(count, 50_000))
        for topic in topics.values():
            await asyncio.to_thread(fx.create_topic, settings, topic, PARTITIONS)
        for (client, acks, apart), topic in topics.items():
            seconds = await _measure(settings, client, acks, apart, topic, pool, count)
            ends = await fx.end_offsets(settings, [topic])
            if ends[topic] != count:
                raise AssertionError(f"{topic} holds {ends[topic]} records, {count} were sent")
            figures[RUNS[(client, acks, apart)]] = round(count / seconds, 1)
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
        "configured as streams/producer.py (acks=all, idempotent, linger 0); confluent-kafka with "
        "librdkafka defaults plus acks=all + idempotence and the Java/aiokafka key hash. Consumers "
        "assign all 6 partitions (no group), read_committed, in a child process; the broker shares the "
        "same 2 cores."
    )
    return figures


def _record_pool(settings: Settings, frames: dict[tuple[str, str], bytes], size: int) -> list[KafkaRecord]:
    """Distinct framed records of realistic histories, as the platform would put them on its topics."""
    topics = fx.topic_names(settings)
    records = fx.backlog_records(fx.templates(), size, fx.Backlog())
    return [(r.key, frames[(topics[r.kind], r.fullname)] + r.body, r.headers) for r in records][:size]


def _records(pool: Sequence[KafkaRecord], count: int) -> itertools.islice[KafkaRecord]:
    return itertools.islice(itertools.cycle(pool), count)


async def _measure(
    settings: Settings,
    client: str,
    acks: str,
    apart: bool,
    topic: str,
    pool: Sequence[KafkaRecord],
    count: int,
) -> float:
    """Seconds from the first send to the last record consumed."""
    bootstrap = settings.kafka_bootstrap
    if not apart:
        ready = asyncio.Event()
        consuming = asyncio.create_task(_consume_aiokafka(bootstrap, topic, count, ready.set))
        await ready.wait()
        began = time.monotonic()
        await _produce_aiokafka(bootstrap, topic, pool, count, acks)
        finished, received = await consuming
    else:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.raw_kafka", client, bootstrap, topic, str(count),
            cwd=REPO, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(f"raw consumer child did not start: {line!r}")
            began = time.monotonic()
            if client == "aiokafka":
                await _produce_aiokafka(bootstrap, topic, pool, count, acks)
            else:
                await asyncio.to_thread(_produce_confluent, bootstrap, topic, pool, count, acks)
            outcome = json.loads(await asyncio.wait_for(child.stdout.readline(), TIMEOUT_S))
            finished, received = outcome["finished"], outcome["received"]
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()
    if received != count:
        raise AssertionError(f"{client} consumed {received} records, {count} were sent")
    return float(finished - began)


async def _produce_aiokafka(
    bootstrap: str, topic: str, pool: Sequence[KafkaRecord], count: int, acks: str
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all" if acks == "all" else 1,
        enable_idempotence=acks == "all",
        linger_ms=0,
    )
    await producer.start()
    try:
        pending = []
        for key, value, headers in _records(pool, count):
            pending.append(await producer.send(topic, value=value, key=key, headers=headers))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)  # raises on any failed delivery
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def _produce_confluent(
    bootstrap: str, topic: str, pool: Sequence[KafkaRecord], count: int, acks: str
) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all" if acks == "all" else "1",
            "enable.idempotence": acks == "all",
            "partitioner": "murmur2_random",  # same key -> partition mapping as aiokafka / Java
        }
    )
    errors: list[str] = []

    def delivered(err: object, _message: object) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value, headers in _records(pool, count):
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,  # type: ignore[arg-type]  # list is invariant; bytes values are fine
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise AssertionError(f"confluent-kafka: {remaining} unacknowledged, errors {errors[:3]}")


async def _consume_aiokafka(
    bootstrap: str, topic: str, count: int, ready: Callable[[], None]
) -> tuple[float, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolved now, so the first fetch is not delayed by it
        ready()
        received = 0
        deadline = time.monotonic() + TIMEOUT_S
        while received < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            received += sum(len(records) for records in batch.values())
        return time.monotonic(), received
    finally:
        await consumer.stop()


def _consume_confluent(
    bootstrap: str, topic: str, count: int, ready: Callable[[], None]
) -> tuple[float, int]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reader",  # required by librdkafka; never joined (assign, no commits)
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "log_level": 3,
        }
    )
    try:
        consumer.assign([CTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        consumer.consume(num_messages=1, timeout=0.2)  # starts the fetchers (the topic is still empty)
        ready()
        received = 0
        deadline = time.monotonic() + TIMEOUT_S
        while received < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=10_000, timeout=1.0):
                if message.error() is not None:
                    raise RuntimeError(f"confluent-kafka consumer: {message.error()}")
                received += 1
        return time.monotonic(), received
    finally:
        consumer.close()


def _child(client: str, bootstrap: str, topic: str, count: int) -> None:
    def ready() -> None:
        print("ready", flush=True)

    if client == "aiokafka":
        finished, received = asyncio.run(_consume_aiokafka(bootstrap, topic, count, ready))
    else:
        finished, received = _consume_confluent(bootstrap, topic, count, ready)
    print(json.dumps({"finished": finished, "received": received}), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
