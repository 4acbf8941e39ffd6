"""A record that cannot be decoded, or whose handling raises, goes to the dead-letter topic with its
source position and the error, and its partition keeps flowing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from api.routes.tasks import task_id_for
from processors.task.history import submission
from schemas.codec import EventCodec
from schemas.events import Envelope, RecordDeadLettered, TaskCompleted, TaskSubmitted
from schemas.registry.client import RegistryClient
from schemas.requests import CancellationRequested, RequestHeader
from schemas.serde import seal
from streams.history import partition_for
from streams.settings import Settings
from streams.topics import REQUESTS
from tests.integration.conftest import api, read_dead_letters, submit_and_wait, wait_for

GARBAGE = b"\x00\x00\x00\xff\xffthis is not avro"


async def _produce_raw(settings: Settings, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, value, key=key, headers=[("source", b"test")])
        return metadata.partition, metadata.offset
    finally:
        await producer.stop()


def test_garbage_on_the_requests_topic_is_dead_lettered_and_the_partition_keeps_flowing(
    platform: Settings,
) -> None:
    topic = REQUESTS.name(platform)
    task_key = f"garbage-{uuid.uuid4()}"
    partition, offset = asyncio.run(_produce_raw(platform, topic, task_key.encode(), GARBAGE))
    assert partition == partition_for(task_key, platform.topic_partitions)

    # A valid task on the same partition, after the garbage, still completes.
    follower: dict[str, Any] = {}
    for attempt in range(200):
        probe_id = task_id_for("acme", f"k{attempt}")
        if partition_for(probe_id, platform.topic_partitions) == partition:
            follower = submit_and_wait(
                platform, {"query": "What is 2 + 2?"}, user="bob", idempotency_key=f"k{attempt}"
            )
            assert follower["task_id"] == probe_id
            break
    assert follower.get("status") == "completed", follower
    assert follower["result"] == "[offline planner] The result is 4."

    # Every consumer of the requests topic parks it: the processor and both projectors.
    records = asyncio.run(read_dead_letters(platform, minimum=3))
    mine = [
        r
        for r in records
        if (r.source_topic, r.source_partition, r.source_offset) == (topic, partition, offset)
        and r.consumer.endswith("task-runner")
    ]
    assert len(mine) == 1, records
    record = mine[0]
    assert record.value == GARBAGE and record.key == task_key.encode()
    assert record.headers == {"source": "test"}
    assert record.error_type in ("UnknownSchemaIdError", "WireFormatError")
    assert record.error


def test_a_truncated_event_is_dead_lettered_with_its_reason(platform: Settings) -> None:
    """A correctly framed record (known schema id) whose Avro body was cut short."""
    topic = REQUESTS.name(platform)
    task_id = str(uuid.uuid4())

    async def framed() -> bytes:
        registry = RegistryClient(platform.schema_registry_url)
        try:
            event, body = submission(
                task_id=task_id,
                org_id="acme",
                user_id="bob",
                payload=TaskSubmitted(query="What is 1 + 1?"),
                now=datetime.now(UTC),
                producer="test",
                producer_version="0",
            )
            return await EventCodec(registry).encode_body(topic, event.payload.fullname(), body)
        finally:
            await registry.close()

    whole = asyncio.run(framed())
    truncated = whole[: len(whole) // 2]
    partition, offset = asyncio.run(_produce_raw(platform, topic, task_id.encode(), truncated))

    # Read what every consumer parked within the wait, then pick the task runner's record of ours.
    records = asyncio.run(read_dead_letters(platform, minimum=10_000, timeout=15))
    mine = [
        r
        for r in records
        if (r.source_topic, r.source_partition, r.source_offset) == (topic, partition, offset)
        and r.consumer.endswith("task-runner")
    ]
    assert len(mine) == 1, [(r.source_offset, r.consumer, r.error) for r in records]
    assert mine[0].value == truncated
    assert mine[0].error  # the decoder's reason, verbatim


def _follower_on(settings: Settings, partition: int, user: str) -> dict[str, Any]:
    """A valid task whose id lands on ``partition``, run to its end after what was produced there."""
    for _attempt in range(500):
        key = f"{user}-{uuid.uuid4().hex[:8]}"
        if partition_for(task_id_for("acme", key), settings.topic_partitions) == partition:
            return submit_and_wait(settings, {"query": "What is 2 + 2?"}, user=user, idempotency_key=key)
    raise AssertionError(f"no idempotency key found for partition {partition}")


async def _submission_framed(settings: Settings, task_id: str) -> bytes:
    """A valid TaskSubmitted for ``task_id``, framed as the platform frames it."""
    registry = RegistryClient(settings.schema_registry_url)
    try:
        event, body = submission(
            task_id=task_id,
            org_id="acme",
            user_id="bob",
            payload=TaskSubmitted(query="What is 1 + 1?"),
            now=datetime.now(UTC),
            producer="test",
            producer_version="0",
        )
        return await EventCodec(registry).encode_body(REQUESTS.name(settings), event.payload.fullname(), body)
    finally:
        await registry.close()


def _runner_record(settings: Settings, partition: int, offset: int) -> RecordDeadLettered:
    """The task runner's dead letter of the record at ``partition``/``offset`` of the requests topic."""
    topic = REQUESTS.name(settings)

    def found() -> list[RecordDeadLettered]:
        # minimum=10**6: read whatever is there within the timeout (every consumer parks records).
        records = asyncio.run(read_dead_letters(settings, minimum=10**6, timeout=5))
        return [
            r
            for r in records
            if (r.source_topic, r.source_partition, r.source_offset) == (topic, partition, offset)
            and r.consumer.endswith("task-runner")
        ]

    mine = wait_for(found, 60, f"the task runner's dead letter of {topic}[{partition}]@{offset}")
    assert len(mine) == 1, mine
    return mine[0]  # type: ignore[no-any-return]


def test_a_framed_record_with_an_unknown_schema_id_is_dead_lettered(platform: Settings) -> None:
    """Confluent framing (magic byte 0) and a well-formed body, but a schema id no registry holds:
    a decode failure of this record, not a registry outage (which would stop the worker)."""
    topic = REQUESTS.name(platform)
    task_id = str(uuid.uuid4())
    whole = asyncio.run(_submission_framed(platform, task_id))
    unknown_id = 2**31 - 7
    record = b"\x00" + unknown_id.to_bytes(4, "big") + whole[5:]
    partition, offset = asyncio.run(_produce_raw(platform, topic, task_id.encode(), record))

    follower = _follower_on(platform, partition, "carol")
    assert follower["status"] == "completed", follower

    parked = _runner_record(platform, partition, offset)
    assert parked.value == record and parked.key == task_id.encode()
    assert parked.headers == {"source": "test"}
    assert parked.error_type == "UnknownSchemaIdError"
    assert str(unknown_id) in parked.error
    # The submission it carried was never run.
    with api(platform) as client:
        assert client.get(f"/v1/tasks/{task_id}").status_code == 404


def test_a_cancellation_for_a_task_never_submitted_is_dead_lettered(platform: Settings) -> None:
    """A valid, decodable request the handler refuses: a CancellationRequested naming a task no
    worker has seen (UnknownTaskError). The request is parked with the reason; the partition flows."""
    topic = REQUESTS.name(platform)
    task_id = str(uuid.uuid4())
    request = CancellationRequested(
        header=RequestHeader(
            request_id=uuid.uuid4(),
            task_id=task_id,
            org_id="acme",
            user_id="bob",
            issued_at=datetime.now(UTC),
            producer="test",
            producer_version="0",
        ),
        reason="no such task",
    )

    async def produce() -> tuple[int, int]:
        registry = RegistryClient(platform.schema_registry_url)
        try:
            value = await EventCodec(registry).encode_request(topic, request)
        finally:
            await registry.close()
        return await _produce_raw(platform, topic, task_id.encode(), value)

    partition, offset = asyncio.run(produce())
    follower = _follower_on(platform, partition, "dave")
    assert follower["status"] == "completed", follower

    parked = _runner_record(platform, partition, offset)
    assert parked.key == task_id.encode()
    assert parked.error_type == "UnknownTaskError"
    assert task_id in parked.error and "CancellationRequested" in parked.error


def test_a_task_event_that_is_not_a_submission_is_dead_lettered(platform: Settings) -> None:
    """A valid, registered task event on the requests topic that only the processor may write
    (TaskCompleted): decodable, but the handler refuses it (NotASubmissionError)."""
    topic = REQUESTS.name(platform)
    task_id = str(uuid.uuid4())

    async def produce() -> tuple[int, int]:
        registry = RegistryClient(platform.schema_registry_url)
        try:
            envelope = Envelope(
                event_id=uuid.uuid4(),
                task_id=task_id,
                org_id="acme",
                user_id="bob",
                sequence=0,
                occurred_at=datetime.now(UTC),
                causation_id=None,
                correlation_id=task_id,
                producer="test",
                producer_version="0",
                prev_hash=None,
            )
            totals = {"steps": 0, "llm_calls": 0, "tool_calls": 0}
            tokens = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            event, body = seal(envelope, TaskCompleted(result="forged", **totals, **tokens))
            value = await EventCodec(registry).encode_body(topic, event.payload.fullname(), body)
        finally:
            await registry.close()
        return await _produce_raw(platform, topic, task_id.encode(), value)

    partition, offset = asyncio.run(produce())
    follower = _follower_on(platform, partition, "erin")
    assert follower["status"] == "completed", follower

    parked = _runner_record(platform, partition, offset)
    assert parked.error_type == "NotASubmissionError"
    assert "TaskCompleted" in parked.error
