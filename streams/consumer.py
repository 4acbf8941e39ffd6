"""Batched aiokafka consumption for per-event hot paths (projections), with decode and dead-lettering.

A :class:`Projector` is handed decoded events in batches together with the next offset of every
partition in the batch; it must make both durable (rows + offsets in one transaction, or idempotent
writes followed by a commit). Records that fail to decode are dead-lettered first, so the offsets
handed over never skip a record that was neither applied nor parked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from schemas.codec import EventCodec
from schemas.events import Event
from schemas.registry.client import RegistryUnavailable
from streams.producer import EventProducer
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoded:
    """An event and where it was read."""

    event: Event
    topic: str
    partition: int
    offset: int


class Projector(Protocol):
    name: str

    async def load_positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Next offsets stored with the read model ({}: resume from the group's committed offsets)."""
        ...

    async def write(self, events: Sequence[Decoded], positions: dict[TopicPartition, int]) -> None:
        """Apply ``events`` idempotently; store ``positions`` with them if the store allows it."""
        ...


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self, consumer: AIOKafkaConsumer, load: Callable[[Sequence[TopicPartition]], Awaitable[dict]]
    ):
        self._consumer = consumer
        self._load = load

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        for tp, offset in (await self._load(list(assigned))).items():
            self._consumer.seek(tp, offset)


class ProjectionLoop:
    """Consumes ``topics`` in batches and feeds decoded events to a projector until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        topics: Sequence[str],
        projector: Projector,
        codec: EventCodec,
        producer: EventProducer,
        max_records: int = 2000,
    ) -> None:
        self._topics = list(topics)
        self._projector = projector
        self._codec = codec
        self._producer = producer
        self._max_records = max_records
        # The group id carries the topic prefix, so two deployments on one broker never share a group.
        self._group = f"{settings.topic_prefix}-projector-{projector.name}"
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            # Under load, let the broker gather a batch for a few ms: fewer fetches and fewer
            # (larger) projection transactions; when idle, this bounds the added delay.
            fetch_min_bytes=settings.projection_fetch_min_bytes,
            fetch_max_wait_ms=settings.projection_fetch_max_wait_ms,
        )
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        self._consumer.subscribe(
            self._topics, listener=_SeekToStored(self._consumer, self._projector.load_positions)
        )
        await self._consumer.start()
        try:
            while not self._stopping.is_set():
                batch = await self._consumer.getmany(timeout_ms=500, max_records=self._max_records)
                if batch:
                    await self._handle(batch)
        finally:
            await self._consumer.stop()

    def stop(self) -> None:
        self._stopping.set()

    async def _handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        decoded: list[Decoded] = []
        positions: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            for record in records:
                try:
                    event = await self._codec.decode_record(record.value)
                except RegistryUnavailable:
                    raise
                except Exception as exc:
                    await self._producer.dead_letter(
                        source_topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        key=record.key,
                        value=record.value,
                        headers=list(record.headers or []),
                        error=exc,
                        consumer=self._group,
                    )
                else:
                    # A request to a running task is not part of its history: what it led to is
                    # (TaskCancelled, ApprovalGranted ...), and that is what the read models show.
                    if isinstance(event, Event):
                        decoded.append(Decoded(event, record.topic, record.partition, record.offset))
            positions[tp] = records[-1].offset + 1
        await self._projector.write(decoded, positions)
        # Authoritative for projectors that cannot store offsets with their rows (Elasticsearch);
        # for the others it keeps the group's lag visible to standard Kafka tooling.
        await self._consumer.commit(positions)
