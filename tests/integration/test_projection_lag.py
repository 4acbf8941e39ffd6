"""Projection lag on the real stack: events and seconds behind, before and after projecting."""

from __future__ import annotations

import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from psycopg_pool import AsyncConnectionPool

from projections.lag import LagReader, PartitionLag, ProjectionLag, ProjectorLag
from projections.migrate import migrate
from projections.postgres import TaskProjector
from streams.admin import ensure_topics
from streams.settings import Settings
from streams.topics import DEAD_LETTER, EVENTS, REQUESTS

AGE_S = 60  # how old the produced records are made to look


async def produce_aged(settings: Settings, tp: TopicPartition, count: int) -> list[int]:
    """``count`` records on ``tp`` stamped AGE_S seconds ago, one second apart; their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        first_ms = int(time.time() * 1000) - AGE_S * 1000
        offsets = []
        for k in range(count):
            metadata = await producer.send_and_wait(
                tp.topic, b"x", partition=tp.partition, timestamp_ms=first_ms + k * 1000
            )
            offsets.append(metadata.offset)
        return offsets
    finally:
        await producer.stop()


async def commit_elasticsearch_position(settings: Settings, tp: TopicPartition, offset: int) -> None:
    """What the Elasticsearch projector's loop does after a batch: commit in its group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.topic_prefix}-projector-elasticsearch",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


def projector(lag: ProjectionLag, name: str) -> ProjectorLag:
    (found,) = [p for p in lag.projectors if p.projector == name]
    return found


def partition(lag: ProjectorLag, tp: TopicPartition) -> PartitionLag:
    (found,) = [p for p in lag.partitions if (p.topic, p.partition) == (tp.topic, tp.partition)]
    return found


async def test_lag_counts_unapplied_records_and_the_age_of_the_first_until_caught_up(
    stack: Settings,
) -> None:
    await migrate(stack.postgres_dsn)
    settings = stack.model_copy(update={"topic_prefix": f"lag-{uuid.uuid4().hex[:8]}"})
    await ensure_topics(settings)
    tp = TopicPartition(EVENTS.name(settings), 2)
    offsets = await produce_aged(settings, tp, 5)
    assert offsets == [0, 1, 2, 3, 4]

    async with (
        AsyncConnectionPool(settings.postgres_dsn, min_size=1, max_size=2, open=False) as pool,
        LagReader(settings) as reader,
    ):
        before = await reader.read(pool)
        for name in ("postgres", "elasticsearch"):
            lag = projector(before, name)
            assert lag.events_behind == 5, lag
            assert AGE_S - 1 < (lag.seconds_behind or 0) < AGE_S + 30, lag
            assert partition(lag, tp).position is None
            assert partition(lag, tp).log_end_offset == 5
        # Only Postgres consumes the dead-letter topic; both consume the task topics.
        topics = {
            name: {p.topic for p in projector(before, name).partitions}
            for name in ("postgres", "elasticsearch")
        }
        assert topics["postgres"] == {
            REQUESTS.name(settings),
            EVENTS.name(settings),
            DEAD_LETTER.name(settings),
        }
        assert topics["elasticsearch"] == {REQUESTS.name(settings), EVENTS.name(settings)}

        # Postgres applied the first three: two behind, as old as the fourth record (AGE_S - 3 s).
        await TaskProjector(pool).write([], {tp: 3})
        midway = await reader.read(pool)
        postgres = projector(midway, "postgres")
        assert (postgres.events_behind, partition(postgres, tp).position) == (2, 3)
        assert AGE_S - 4 < (postgres.seconds_behind or 0) < AGE_S - 3 + 30
        assert (postgres.seconds_behind or 0) < (projector(midway, "elasticsearch").seconds_behind or 0)
        assert projector(midway, "elasticsearch").events_behind == 5

        await TaskProjector(pool).write([], {tp: 5})
        await commit_elasticsearch_position(settings, tp, 5)
        after = await reader.read(pool)
        for name in ("postgres", "elasticsearch"):
            lag = projector(after, name)
            assert (lag.events_behind, lag.seconds_behind) == (0, 0.0), lag
            assert partition(lag, tp).position == 5
