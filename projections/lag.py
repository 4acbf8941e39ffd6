"""Projection lag: how far each projector is behind the log, in events and in seconds.

Per projector and topic-partition: the log end offset, the projector's position (Postgres: its
``projection_offsets`` rows, the ones it resumes from; Elasticsearch: its consumer group's committed
offsets, the only record of its progress), the events between them, and the seconds since the
first record not yet applied was written. Served by ``GET /v1/status`` and exported as Prometheus
gauges (:func:`export`).

The arithmetic is pure (:func:`partition_lag`, :func:`projector_lag`); :class:`LagReader` only
gathers the offsets and timestamps it needs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict

from projections.postgres import TaskProjector
from projections.runner import PROJECTORS, projected_topics
from streams.metrics import CONSUMER_LAG
from streams.settings import Settings
from streams.topics import REQUESTS

LAG_EVENTS = Gauge(
    "agentlog_projection_lag_events", "Records on the log a projector has not applied yet.", ["projector"]
)
LAG_SECONDS = Gauge(
    "agentlog_projection_lag_seconds",
    "Seconds since the oldest record a projector has not applied was written (0: caught up;"
    " NaN: behind, but that record could not be read in time).",
    ["projector"],
)


class PartitionLag(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    log_start_offset: int
    log_end_offset: int
    position: int | None  # the next offset the projector will apply; None: none stored yet
    events_behind: int
    seconds_behind: float | None  # None: behind, but the first pending record was not read in time


class ProjectorLag(BaseModel):
    model_config = ConfigDict(frozen=True)

    projector: str
    events_behind: int
    seconds_behind: float | None
    partitions: list[PartitionLag]


class ProjectionLag(BaseModel):
    model_config = ConfigDict(frozen=True)

    measured_at: datetime
    projectors: list[ProjectorLag]


def pending_from(position: int | None, log_start: int, log_end: int) -> int:
    """The first offset the projector has yet to apply. With no position, or one below the log start
    (records deleted), it reads from the log start (``auto_offset_reset=earliest``)."""
    if position is None:
        return log_start
    return min(max(position, log_start), log_end)


def partition_lag(
    topic: str,
    partition: int,
    *,
    log_start: int,
    log_end: int,
    position: int | None,
    now: datetime,
    first_pending_timestamp_ms: int | None,
) -> PartitionLag:
    """One partition's lag; ``first_pending_timestamp_ms`` is the Kafka timestamp of the record at
    :func:`pending_from` (``None`` when it was not read; ignored when caught up)."""
    behind = log_end - pending_from(position, log_start, log_end)
    seconds: float | None
    if behind == 0:
        seconds = 0.0
    elif first_pending_timestamp_ms is None:
        seconds = None
    else:
        # A producer's clock ahead of ours would give a negative age; it is not ahead of the log.
        seconds = max(0.0, now.timestamp() - first_pending_timestamp_ms / 1000)
    return PartitionLag(
        topic=topic,
        partition=partition,
        log_start_offset=log_start,
        log_end_offset=log_end,
        position=position,
        events_behind=behind,
        seconds_behind=seconds,
    )


def projector_lag(projector: str, partitions: Sequence[PartitionLag]) -> ProjectorLag:
    """The projector's total: events behind summed, seconds behind the worst partition's. A
    partition whose seconds are unknown does not hide the others' (the total is a lower bound
    then); the total is unknown only when every partition that is behind is."""
    known = [p.seconds_behind for p in partitions if p.seconds_behind is not None]
    unknown = any(p.seconds_behind is None for p in partitions)
    return ProjectorLag(
        projector=projector,
        events_behind=sum(p.events_behind for p in partitions),
        seconds_behind=max(known, default=None if unknown else 0.0),
        partitions=sorted(partitions, key=lambda p: (p.topic, p.partition)),
    )


def export(lag: ProjectionLag) -> None:
    """Set the ``agentlog_projection_lag_*`` gauges from ``lag``."""
    for projector in lag.projectors:
        LAG_EVENTS.labels(projector=projector.projector).set(projector.events_behind)
        seconds = projector.seconds_behind
        LAG_SECONDS.labels(projector=projector.projector).set(math.nan if seconds is None else seconds)


class ConsumerLag(BaseModel):
    """One consumer group's lag on one partition: records between its committed offset (the log
    start when it has none) and the partition's last stable offset."""

    model_config = ConfigDict(frozen=True)

    group: str
    topic: str
    partition: int
    records_behind: int


def consumer_groups(settings: Settings) -> dict[str, list[str]]:
    """The platform's Kafka consumer groups and the topics each consumes."""
    groups = {f"{settings.topic_prefix}-processor": [REQUESTS.name(settings)]}
    for kind in PROJECTORS:
        groups[f"{settings.topic_prefix}-projector-{kind}"] = projected_topics(kind, settings)
    return groups


def export_consumer_lag(lags: Iterable[ConsumerLag]) -> None:
    """Set the ``agentlog_consumer_lag_records`` gauges, one series per group and partition."""
    for lag in lags:
        CONSUMER_LAG.labels(group=lag.group, topic=lag.topic, partition=str(lag.partition)).set(
            lag.records_behind
        )


class LagReader:
    """Reads the lag of both projectors of one deployment (``settings.topic_prefix``).

    Holds a Kafka consumer (no group: it only reads offsets and single records) and an admin
    client, so a status endpoint can measure on every request without reconnecting.
    """

    def __init__(self, settings: Settings, *, read_timeout: float = 2.0) -> None:
        self._settings = settings
        self._read_timeout = read_timeout
        # read_committed, as the projectors read: the end offset is then the last stable offset,
        # beyond which a projector cannot be expected to have read.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        self._admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        # Serializes reads: the consumer's assignment is changed by each one.
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._consumer.start()
        await self._admin.start()

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def __aenter__(self) -> LagReader:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def read(self, pool: AsyncConnectionPool, *, now: datetime | None = None) -> ProjectionLag:
        """Both projectors' lag now (``now`` is the moment ages are measured from)."""
        at = now or datetime.now(UTC)
        async with self._lock:
            projectors = []
            for kind in PROJECTORS:
                partitions = await self._partitions(projected_topics(kind, self._settings))
                if kind == "postgres":
                    positions = await _stored_positions(pool, TaskProjector.name, partitions)
                else:
                    positions = await self._committed(f"{self._settings.topic_prefix}-projector-{kind}")
                projectors.append(await self._lag(kind, partitions, positions, at))
            return ProjectionLag(measured_at=at, projectors=projectors)

    async def consumer_lag(self) -> list[ConsumerLag]:
        """Every consumer group of :func:`consumer_groups` on every partition of its topics."""
        async with self._lock:
            lags: list[ConsumerLag] = []
            for group, topics in consumer_groups(self._settings).items():
                partitions = await self._partitions(topics)
                if not partitions:
                    continue
                committed = await self._committed(group)
                starts = await self._consumer.beginning_offsets(partitions)
                ends = await self._consumer.end_offsets(partitions)
                lags.extend(
                    ConsumerLag(
                        group=group,
                        topic=tp.topic,
                        partition=tp.partition,
                        records_behind=ends[tp] - pending_from(committed.get(tp), starts[tp], ends[tp]),
                    )
                    for tp in partitions
                )
            return lags

    async def _lag(
        self,
        kind: str,
        partitions: list[TopicPartition],
        positions: Mapping[TopicPartition, int],
        now: datetime,
    ) -> ProjectorLag:
        if not partitions:
            return projector_lag(kind, [])
        starts = await self._consumer.beginning_offsets(partitions)
        ends = await self._consumer.end_offsets(partitions)
        first_pending = {tp: pending_from(positions.get(tp), starts[tp], ends[tp]) for tp in partitions}
        timestamps = await self._first_timestamps(
            {tp: offset for tp, offset in first_pending.items() if offset < ends[tp]}
        )
        return projector_lag(
            kind,
            [
                partition_lag(
                    tp.topic,
                    tp.partition,
                    log_start=starts[tp],
                    log_end=ends[tp],
                    position=positions.get(tp),
                    now=now,
                    first_pending_timestamp_ms=timestamps.get(tp),
                )
                for tp in partitions
            ],
        )

    async def _partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        """The partitions of ``topics`` that exist (a topic not created yet has nothing to lag)."""
        described = await self._admin.describe_topics(list(topics))
        # error_code 3 (UNKNOWN_TOPIC_OR_PARTITION) leaves ``partitions`` empty.
        return [
            TopicPartition(topic["topic"], partition["partition"])
            for topic in described
            for partition in sorted(topic["partitions"], key=lambda p: p["partition"])
        ]

    async def _committed(self, group: str) -> dict[TopicPartition, int]:
        offsets = await self._admin.list_consumer_group_offsets(group)
        # -1: the group has no committed offset for that partition.
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def _first_timestamps(self, pending: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The Kafka timestamp of the record at each partition's offset in ``pending`` (or the first
        one after it, when that offset holds no record); partitions not read in time are missing."""
        if not pending:
            return {}
        self._consumer.assign(list(pending))
        for tp, offset in pending.items():
            self._consumer.seek(tp, offset)
        found: dict[TopicPartition, int] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._read_timeout
        try:
            while len(found) < len(pending) and loop.time() < deadline:
                batch = await self._consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    if tp not in found and records:
                        found[tp] = records[0].timestamp
                        # Done with this partition: stop fetching (and buffering) its records.
                        self._consumer.pause(tp)
        finally:
            self._consumer.assign([])
        return found


async def _stored_positions(
    pool: AsyncConnectionPool, projector: str, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT topic, partition, next_offset FROM projection_offsets"
            " WHERE projector = %s AND topic = ANY(%s)",
            (projector, sorted({tp.topic for tp in partitions})),
        )
        rows = await cursor.fetchall()
    return {TopicPartition(topic, partition): offset for topic, partition, offset in rows}


async def projection_lag(settings: Settings, pool: AsyncConnectionPool) -> ProjectionLag:
    """Both projectors' lag, with Kafka clients opened for this one reading."""
    async with LagReader(settings) as reader:
        return await reader.read(pool)
