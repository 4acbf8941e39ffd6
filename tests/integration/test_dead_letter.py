"""A record that cannot be decoded goes to the dead-letter topic, and its partition keeps flowing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from api.routes.tasks import task_id_for
from processors.task.history import submission
from schemas.codec import EventCodec
from schemas.events import TaskSubmitted
from schemas.registry.client import RegistryClient
from streams.history import partition_for
from streams.settings import Settings
from streams.topics import REQUESTS
from tests.integration.conftest import read_dead_letters, submit_and_wait

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
