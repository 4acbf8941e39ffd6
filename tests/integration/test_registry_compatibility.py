"""The registry enforces compatibility (default BACKWARD_TRANSITIVE) for Confluent's own client."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import SerializingProducer
from confluent_kafka.error import ValueSerializationError
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas.events import TaskSubmitted
from schemas.registry.client import RegistryClient, RegistryRejected, subject_for
from schemas.serde import schema_json
from streams.settings import Settings
from streams.topics import REQUESTS


def _record(*fields: dict[str, object]) -> Schema:
    body = {"type": "record", "name": "Probe", "namespace": "agentlog.test", "fields": list(fields)}
    return Schema(json.dumps(body), "AVRO")


V1 = _record({"name": "a", "type": "string"})
V2_REQUIRED = _record({"name": "a", "type": "string"}, {"name": "b", "type": "int"})
V2_OPTIONAL = _record(
    {"name": "a", "type": "string"}, {"name": "b", "type": ["null", "int"], "default": None}
)


def test_an_incompatible_schema_is_refused_with_409_and_not_stored(platform: Settings) -> None:
    client = SchemaRegistryClient({"url": platform.schema_registry_url})
    subject = f"probe-{uuid.uuid4().hex[:8]}"
    client.register_schema(subject, V1)
    assert client.get_compatibility() == "BACKWARD_TRANSITIVE"

    assert client.test_compatibility(subject, V2_REQUIRED) is False
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, V2_REQUIRED)
    assert refused.value.http_status_code == 409
    assert "reader_field_missing_default_value" in refused.value.error_message
    assert client.get_versions(subject) == [1]

    assert client.test_compatibility(subject, V2_OPTIONAL) is True
    client.register_schema(subject, V2_OPTIONAL)
    assert client.get_versions(subject) == [1, 2]


def test_subject_level_config_overrides_the_global_one(platform: Settings) -> None:
    client = SchemaRegistryClient({"url": platform.schema_registry_url})
    subject = f"probe-{uuid.uuid4().hex[:8]}"
    client.register_schema(subject, V1)
    base = platform.schema_registry_url
    assert httpx.get(f"{base}/config/{subject}").status_code == 404
    assert httpx.put(f"{base}/config/{subject}", json={"compatibility": "bogus"}).status_code == 422
    client.set_compatibility(subject, "NONE")
    assert httpx.get(f"{base}/config/{subject}").json() == {"compatibilityLevel": "NONE"}
    client.register_schema(subject, V2_REQUIRED)  # allowed under NONE
    assert client.get_versions(subject) == [1, 2]


def _end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap)
        await consumer.start()
        try:
            count = len(consumer.partitions_for_topic(topic) or ())
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(count)])
            return {tp.partition: offset for tp, offset in ends.items()}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_a_producer_with_an_incompatible_schema_is_refused_and_produces_nothing(platform: Settings) -> None:
    """A foreign system's producer (confluent-kafka's SerializingProducer, auto-registering as it does
    by default, docs/producing.md) whose TaskSubmitted adds a required field: the registry answers
    409, the produce call raises before anything is sent, and the requests topic does not move.
    agentlog's own registry client, which its producers register through, is refused the same way."""
    topic = REQUESTS.name(platform)
    subject = subject_for(topic, TaskSubmitted.fullname())
    registry = SchemaRegistryClient({"url": platform.schema_registry_url})
    registry.register_schema(subject, Schema(schema_json(TaskSubmitted.fullname()), "AVRO"))
    versions = registry.get_versions(subject)

    incompatible = json.loads(schema_json(TaskSubmitted.fullname()))
    incompatible["fields"].append({"name": "billing_account", "type": "string"})  # no default
    incompatible_text = json.dumps(incompatible)
    producer = SerializingProducer(
        {
            "bootstrap.servers": platform.kafka_bootstrap,
            "partitioner": "murmur2_random",
            "value.serializer": AvroSerializer(
                registry,
                incompatible_text,
                conf={"subject.name.strategy": topic_record_subject_name_strategy},
            ),
        }
    )
    task_id = str(uuid.uuid4())
    value: dict[str, Any] = {
        "envelope": {
            "event_id": str(uuid.uuid4()),
            "task_id": task_id,
            "org_id": "acme",
            "user_id": "foreign-system",
            "sequence": 0,
            "occurred_at": datetime.now(UTC),
            "causation_id": None,
            "correlation_id": task_id,
            "producer": "billing-service",
            "producer_version": "8.0.0",
            "prev_hash": None,
        },
        "query": "What is 6 * 7?",
        "context": {},
        "priority": "NORMAL",
        "session_id": None,
        "idempotency_key": None,
        "billing_account": "BA-1",
    }
    before = _end_offsets(platform, topic)
    with pytest.raises(ValueSerializationError) as refused:
        producer.produce(topic, key=task_id.encode(), value=value)
    cause = refused.value.args[0] if refused.value.args else None
    assert "409" in str(refused.value) or getattr(cause, "http_status_code", None) == 409, refused.value
    assert producer.flush(10) == 0

    async def register_with_agentlog_client() -> None:
        client = RegistryClient(platform.schema_registry_url)
        try:
            await client.register(subject, incompatible_text)
        finally:
            await client.close()

    with pytest.raises(RegistryRejected) as rejected:
        asyncio.run(register_with_agentlog_client())
    assert rejected.value.status == 409

    assert registry.get_versions(subject) == versions
    assert _end_offsets(platform, topic) == before
