"""Another system submits a task with confluent-kafka's own producer, serializer and registry client.

Nothing from agentlog is used on the producing side: only the published schema (the .avsc file or
the registry), the topic name, the key (the task id) and the partitioner Kafka's Java client uses.
This is the example of docs/producing.md.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.events import TaskSubmitted
from schemas.serde import schema_json
from streams.settings import Settings
from streams.topics import REQUESTS
from tests.integration.conftest import TASK_TIMEOUT, api, wait_for


def test_a_task_produced_by_confluent_kafka_runs_to_completion(platform: Settings) -> None:
    topic = REQUESTS.name(platform)
    registry = SchemaRegistryClient({"url": platform.schema_registry_url})
    serialize = AvroSerializer(
        registry,
        schema_json(TaskSubmitted.fullname()),
        conf={"subject.name.strategy": topic_record_subject_name_strategy},
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
            "producer_version": "7.1.0",
            "prev_hash": None,
        },
        "query": "What is 6 * 7?",
        "context": {"invoice": "INV-1"},
        "priority": "NORMAL",
        "session_id": None,
        "idempotency_key": None,
    }
    # murmur2_random = the Java client's partitioner, so the key lands where agentlog expects.
    producer = Producer({"bootstrap.servers": platform.kafka_bootstrap, "partitioner": "murmur2_random"})
    producer.produce(
        topic,
        key=task_id.encode(),
        value=serialize(value, SerializationContext(topic, MessageField.VALUE)),
        headers=[("ce_specversion", b"1.0"), ("ce_type", TaskSubmitted.fullname().encode())],
    )
    assert producer.flush(10) == 0

    with api(platform) as client:

        def done() -> dict[str, Any] | None:
            reply = client.get(f"/v1/tasks/{task_id}")
            return (
                reply.json() if reply.status_code == 200 and reply.json()["status"] == "completed" else None
            )

        view = wait_for(done, TASK_TIMEOUT, f"foreign task {task_id} to complete")
    assert view["result"] == "[offline planner] The result is 42."
    assert view["org_id"] == "acme" and view["user_id"] == "foreign-system"
