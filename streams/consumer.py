"""Batched aiokafka consumption for per-event hot paths (projections), with decode and dead-lettering.

A :class:`Projector` is handed decoded events in batches together with the next offset of every
partition in the batch; it must make both durable (rows + offsets in one transaction, or idempotent
writes followed by a commit). Records that fail to decode are dead-lettered first, so the offsets
handed over never skip a record that was neither applied nor parked.

A loop whose topics include the dead-letter topic also hands over the parked records it reads
there (:class:`DeadLetter`), to a :class:`DeadLetterProjector`, in the same call as the events and
positions, so that they too are stored with the offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from schemas.codec import EventCodec
from schemas.events import Event, RecordDeadLettered
from schemas.registry.client import RegistryUnavailable
from schemas.requests import TaskRequest
from streams import tracing
from streams.logs import task_context
from streams.producer import EventProducer
from streams.settings import Settings
from streams.topics import DEAD_LETTER
from streams.tracing import traceparent_from

log = logging.getLogger(__name__)

# A store outage (PostgreSQL restarting, Elasticsearch hung) is waited out in place, the batch
# written again (every write is idempotent and carries its own offsets), instead of the process
# dying and the supervisor restarting it with its growing backoff. Bounded below aiokafka's
# max_poll_interval (300 s): a longer outage ends the process, and the supervisor takes over.
STORE_RETRY_SECONDS = 240.0
STORE_RETRY_MAX_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Decoded:
    """An event and where it was read."""

    event: Event
    topic: str
    partition: int
    offset: int
    # The record's headers as read (no copy): the traceparent is looked up only when tracing or
    # debug logging asks for it.
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True)
class DeadLetter:
    """A dead-letter record, where it was read (its idempotency key), and the parked record's value
    decoded when it can be (``None``: it never decoded), which may name the task and org."""

    record: RecordDeadLettered
    original: Event | TaskRequest | None
    topic: str
    partition: int
    offset: int


class Projector(Protocol):
    name: str
    transient_errors: tuple[type[BaseException], ...]
    """The store's errors worth waiting out (connection lost, timeout); any other error is a bug
    or bad data and ends the process loudly."""

    async def load_positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Next offsets stored with the read model ({}: resume from the group's committed offsets)."""
        ...

    async def write(self, events: Sequence[Decoded], positions: dict[TopicPartition, int]) -> None:
        """Apply ``events`` idempotently; store ``positions`` with them if the store allows it."""
        ...


@runtime_checkable
class DeadLetterProjector(Projector, Protocol):
    """A projector that also stores dead-letter records (only such a one may consume that topic)."""

    # The marker the loop checks: a protocol's methods alone cannot tell the two kinds apart at run
    # time, since both have a ``write``.
    projects_dead_letters: Literal[True]

    async def write(
        self,
        events: Sequence[Decoded],
        positions: dict[TopicPartition, int],
        *,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> None:
        """As :meth:`Projector.write`, plus ``dead_letters``, idempotently by their own position."""
        ...


async def read_dead_letter(codec: EventCodec, record: ConsumerRecord) -> DeadLetter:
    """The dead-letter record ``record`` decoded, with the parked value decoded too when it can be.

    Raises when the dead-letter record itself does not decode (the caller decides what then).
    """
    parked = await codec.decode_dead_letter(record.value)
    original: Event | TaskRequest | None = None
    if parked.value is not None:
        try:
            original = await codec.decode_record(parked.value)
        except RegistryUnavailable:
            raise
        except Exception:
            # Expected for most dead letters: not decoding is why they were parked.
            original = None
    return DeadLetter(parked, original, record.topic, record.partition, record.offset)


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
        self._dead_letter_topic = DEAD_LETTER.name(settings)
        self._dead_letter_projector = projector if isinstance(projector, DeadLetterProjector) else None
        if self._dead_letter_topic in self._topics and self._dead_letter_projector is None:
            raise ValueError(
                f"projector {projector.name!r} cannot store dead letters, so it cannot consume "
                f"{self._dead_letter_topic!r}"
            )
        # Dead-letter records that did not decode themselves: skipped, counted and logged.
        self.undecodable_dead_letters = 0

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

    def _log_store_outage(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "projector %s: store unavailable (%s: %s); writing the batch again in %.1f s (attempt %d)",
            self._projector.name,
            type(error).__name__,
            error,
            state.upcoming_sleep,
            state.attempt_number,
        )

    async def _handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        parked = {tp: records for tp, records in batch.items() if tp.topic == self._dead_letter_topic}
        rest = {tp: records for tp, records in batch.items() if tp.topic != self._dead_letter_topic}
        decoded, positions = await decode_batch(rest, self._codec, self._producer, consumer=self._group)
        dead_letters: list[DeadLetter] = []
        if self._dead_letter_projector is not None:
            dead_letters, parked_positions, skipped = await decode_dead_letters(parked, self._codec)
            self.undecodable_dead_letters += skipped
            positions |= parked_positions
        spans = self._trace_spans(decoded) if tracing.enabled() else ()
        try:
            await self._write(decoded, positions, dead_letters)
        finally:
            for span in spans:
                span.end()
        if log.isEnabledFor(logging.DEBUG):
            self._log_projected(decoded)
        # Authoritative for projectors that cannot store offsets with their rows (Elasticsearch);
        # for the others it keeps the group's lag visible to standard Kafka tooling. A rebalance
        # may have taken partitions away while the batch was written: their offsets are not ours
        # to commit any more (aiokafka raises), and the new owner resumes from the stored or last
        # committed offset, writing again what this batch wrote (idempotently).
        owned = self._consumer.assignment()
        mine = {tp: offset for tp, offset in positions.items() if tp in owned}
        if len(mine) < len(positions):
            log.info(
                "projector %s: not committing %d partitions revoked during the batch",
                self._projector.name,
                len(positions) - len(mine),
            )
        if not mine:
            return
        try:
            await self._consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning(
                "projector %s: commit refused by a rebalance (%s); the batch is delivered again",
                self._projector.name,
                exc,
            )

    def _trace_spans(self, decoded: Sequence[Decoded]) -> list[tracing.Span]:
        """A span per trace in the batch, continuing it, around the batch's write: the trace of a
        task shows where its events were projected. One per trace, not per event: a decision's
        events share their traceparent."""
        spans: dict[str, tracing.Span] = {}
        for item in decoded:
            traceparent = traceparent_from(item.headers)
            if traceparent is None or traceparent in spans:
                continue
            span = tracing.start_span(
                f"projector-{self._projector.name} write",
                traceparent,
                kind=tracing.SpanKind.CONSUMER,
                attributes={
                    "agentlog.task_id": item.event.task_id,
                    "agentlog.org_id": item.event.envelope.org_id,
                    "agentlog.batch_events": len(decoded),
                },
            )
            if span is not None:
                spans[traceparent] = span
        return list(spans.values())

    def _log_projected(self, decoded: Sequence[Decoded]) -> None:
        for item in decoded:
            event = item.event
            with task_context(event.task_id, event.envelope.org_id, traceparent_from(item.headers)):
                log.debug("projected %s #%d of task %s", event.event_type, event.sequence, event.task_id)

    async def _write(
        self,
        decoded: list[Decoded],
        positions: dict[TopicPartition, int],
        dead_letters: list[DeadLetter],
    ) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(self._projector.transient_errors),
            wait=wait_exponential_jitter(initial=0.25, max=STORE_RETRY_MAX_WAIT_SECONDS),
            stop=stop_after_delay(STORE_RETRY_SECONDS),
            before_sleep=self._log_store_outage,
            reraise=True,
        ):
            with attempt:
                if self._dead_letter_projector is not None:
                    await self._dead_letter_projector.write(decoded, positions, dead_letters=dead_letters)
                else:
                    await self._projector.write(decoded, positions)


async def decode_batch(
    batch: dict[TopicPartition, list[ConsumerRecord]],
    codec: EventCodec,
    producer: EventProducer,
    *,
    consumer: str,
) -> tuple[list[Decoded], dict[TopicPartition, int]]:
    """The task events of ``batch`` and the next offset of each of its partitions.

    Records that fail to decode are dead-lettered (naming ``consumer``) before this returns, so the
    positions handed on never skip a record that was neither decoded nor parked. Shared by the live
    loop and ``agentlog rebuild``, which must treat the log identically.
    """
    decoded: list[Decoded] = []
    positions: dict[TopicPartition, int] = {}
    for tp, records in batch.items():
        for record in records:
            try:
                event = await codec.decode_record(record.value)
            except RegistryUnavailable:
                raise
            except Exception as exc:
                await producer.dead_letter(
                    source_topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    headers=list(record.headers or []),
                    error=exc,
                    consumer=consumer,
                )
            else:
                # A request to a running task is not part of its history: what it led to is
                # (TaskCancelled, ApprovalGranted ...), and that is what the read models show.
                if isinstance(event, Event):
                    decoded.append(
                        Decoded(event, record.topic, record.partition, record.offset, record.headers or ())
                    )
        if records:
            positions[tp] = records[-1].offset + 1
    return decoded, positions


async def decode_dead_letters(
    batch: dict[TopicPartition, list[ConsumerRecord]], codec: EventCodec
) -> tuple[list[DeadLetter], dict[TopicPartition, int], int]:
    """The dead-letter records of ``batch`` (all from the dead-letter topic), the next offset of each
    of its partitions, and how many records were skipped because they did not decode themselves."""
    dead_letters: list[DeadLetter] = []
    positions: dict[TopicPartition, int] = {}
    skipped = 0
    for tp, records in batch.items():
        for record in records:
            try:
                dead_letters.append(await read_dead_letter(codec, record))
            except RegistryUnavailable:
                raise
            except Exception as exc:
                # Never dead-letter a dead-letter record: its copy would land on this same topic,
                # fail the same way and be parked again, forever. Stopping the projector instead
                # would hold every read model behind one bad record. So it is skipped (its bytes
                # stay on the log to inspect), counted, and logged at the highest level.
                skipped += 1
                log.critical(
                    "skipped a dead-letter record that does not decode, %s[%d]@%d: %s: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    type(exc).__name__,
                    exc,
                )
        if records:
            positions[tp] = records[-1].offset + 1
    return dead_letters, positions, skipped
