"""The one producer of agentlog: Confluent-framed Avro events with CloudEvents headers.

A decision's events go out as one batch and the call returns only when Kafka acknowledged all of
them (acks=all, idempotent producer), so an effect is never performed before its request is durable.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from schemas.codec import EventCodec
from schemas.events import Event, RecordDeadLettered
from schemas.requests import TaskRequest
from streams.headers import event_headers, header_map
from streams.metrics import DEAD_LETTERED
from streams.position import Position
from streams.settings import Settings
from streams.topics import DEAD_LETTER

log = logging.getLogger(__name__)


class EventProducer:
    def __init__(self, settings: Settings, codec: EventCodec, *, source: str) -> None:
        self._settings = settings
        self._codec = codec
        self._source = source
        self._kafka: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # Created here, not in __init__: aiokafka binds to the running event loop.
        self._kafka = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            # No linger: every write is awaited by a task that is waiting for it, and under load
            # records batch anyway while the previous request to the broker is in flight.
            # Measured: linger 2 ms made an acknowledged write 3.7 ms at p50, linger 0 0.7 ms.
            linger_ms=0,
        )
        await self._kafka.start()

    async def stop(self) -> None:
        if self._kafka is not None:
            await self._kafka.stop()

    async def flush(self) -> None:
        """Wait until everything sent so far is acknowledged (or failed)."""
        if self._kafka is not None:
            await self._kafka.flush()

    @property
    def codec(self) -> EventCodec:
        """The codec this producer encodes with; readers in the same process decode with it too
        (one registry client and one schema cache per process)."""
        return self._codec

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._kafka is None:
            raise RuntimeError("EventProducer.start() was not awaited")
        return self._kafka

    async def publish(
        self,
        topic: str,
        stamped: Sequence[tuple[Event, bytes]],
        *,
        traceparent: str | None = None,
        checkpoint: tuple[str, Event, bytes] | None = None,
    ) -> list[Position]:
        """Send events (with their already-encoded Avro bodies) keyed by task id; wait for all acks.

        ``checkpoint`` (topic, CheckpointSaved event, body) goes out in the same batch: one
        acknowledged write carries a decision's events and the state they lead to. Returns where
        each record landed, in the order sent.
        """
        records = [(topic, event, body) for event, body in stamped]
        if checkpoint is not None:
            records.append(checkpoint)
        futures = []
        for record_topic, event, body in records:
            value = await self._codec.encode_body(record_topic, event.payload.fullname(), body)
            futures.append(
                await self._producer.send(
                    record_topic,
                    value=value,
                    key=event.task_id.encode(),
                    headers=event_headers(event, source=self._source, traceparent=traceparent),
                )
            )
        return [Position(m.topic, m.partition, m.offset) for m in await asyncio.gather(*futures)]

    async def send_request(
        self, topic: str, request: TaskRequest, *, traceparent: str | None = None
    ) -> Position:
        """Send a request to a running task, keyed by its task id; where it landed once acknowledged."""
        value = await self._codec.encode_request(topic, request)
        metadata = await self._producer.send_and_wait(
            topic,
            value=value,
            key=request.task_id.encode(),
            headers=event_headers(request, source=self._source, traceparent=traceparent),
        )
        return Position(metadata.topic, metadata.partition, metadata.offset)

    async def dead_letter(
        self,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        error: BaseException,
        consumer: str,
    ) -> RecordDeadLettered:
        """Park a record that could not be decoded or processed, with why and where it came from."""
        record = RecordDeadLettered(
            dead_letter_id=uuid.uuid4(),
            occurred_at=datetime.now(UTC),
            source_topic=source_topic,
            source_partition=partition,
            source_offset=offset,
            key=key,
            value=value,
            headers=header_map(list(headers or [])),
            error_type=type(error).__name__,
            error=str(error) or repr(error),
            consumer=consumer,
        )
        topic = DEAD_LETTER.name(self._settings)
        framed = await self._codec.encode_dead_letter(topic, record)
        await self._producer.send_and_wait(
            topic, value=framed, key=f"{source_topic}/{partition}/{offset}".encode()
        )
        DEAD_LETTERED.labels(source_topic=source_topic).inc()
        log.error(
            "dead-lettered %s[%d]@%d from %s: %s: %s",
            source_topic,
            partition,
            offset,
            consumer,
            record.error_type,
            record.error,
        )
        return record
