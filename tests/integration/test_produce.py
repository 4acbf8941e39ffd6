"""The producer SDK and ``agentlog produce`` against the real platform.

What they produce is read back with confluent-kafka's own consumer, ``SchemaRegistryClient`` and
``AvroDeserializer`` (a foreign client, no agentlog code), so the wire format, the registered
schema, the key and the headers are checked as another system sees them. Bad data produces
nothing: the topic's end offsets do not move.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from processors.task.history import event_id_for
from schemas.events import LlmCallFailed, TaskSubmitted
from streams.history import partition_for
from streams.sdk import SDK_PRODUCER, SDK_VERSION, AgentlogProducer, EventValidationError, ProducedRecord
from streams.settings import Settings
from streams.topics import EVENTS, REQUESTS
from tests.integration.conftest import TASK_TIMEOUT, api, wait_for

AGENTLOG = Path(sys.executable).with_name("agentlog")
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


def _cli_env(settings: Settings) -> dict[str, str]:
    """The platform's configuration, as the CLI reads it from the environment."""
    return {
        **os.environ,
        "AGENTLOG_TOPIC_PREFIX": settings.topic_prefix,
        "AGENTLOG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AGENTLOG_REGISTRY_PORT": str(settings.registry_port),
        "AGENTLOG_API_PORT": str(settings.api_port),
    }


def run_cli(settings: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENTLOG), "produce", *args],
        env=_cli_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-produce-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )


def read_record(settings: Settings, topic: str, partition: int, offset: int) -> Message:
    consumer = _consumer(settings)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = 30
        while deadline > 0:
            message = consumer.poll(1.0)
            deadline -= 1
            if message is not None and message.error() is None:
                assert (message.partition(), message.offset()) == (partition, offset)
                return message
        raise AssertionError(f"no record at {topic}[{partition}]@{offset}")
    finally:
        consumer.close()


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = _consumer(settings)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
    finally:
        consumer.close()


def records_keyed(settings: Settings, topic: str, key: str) -> list[Message]:
    """Every record of ``topic`` with ``key``, scanning its partition for that key to the end."""
    partition = partition_for(key, len(end_offsets(settings, topic)))
    end = end_offsets(settings, topic)[partition]
    consumer = _consumer(settings)
    found: list[Message] = []
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        position = 0
        while position < end:
            message = consumer.poll(5.0)
            assert message is not None, f"{topic}[{partition}] stopped at {position} of {end}"
            offset = message.offset()
            if message.error() is None and offset is not None:
                position = offset + 1
                if message.key() == key.encode():
                    found.append(message)
    finally:
        consumer.close()
    return found


def decode_foreign(settings: Settings, message: Message) -> dict[str, Any]:
    """The record's value as confluent-kafka's AvroDeserializer reads it (writer schema by id)."""
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": settings.schema_registry_url}))
    value = deserialize(message.value(), SerializationContext(str(message.topic()), MessageField.VALUE))
    assert isinstance(value, dict)
    return value


def wait_until_completed(settings: Settings, task_id: str) -> dict[str, Any]:
    with api(settings) as client:

        def done() -> dict[str, Any] | None:
            reply = client.get(f"/v1/tasks/{task_id}")
            ended = reply.status_code == 200 and reply.json()["status"] in ("completed", "failed")
            return reply.json() if ended else None

        return wait_for(done, TASK_TIMEOUT, f"task {task_id} to end")


def check_submission_on_the_log(
    settings: Settings, produced: ProducedRecord, *, query: str, source: str
) -> dict[str, Any]:
    """The produced record, read by the foreign client: framing, key, headers and envelope."""
    assert produced.task_id is not None
    topic = REQUESTS.name(settings)
    assert produced.topic == topic and produced.event_type == TaskSubmitted.fullname()
    assert produced.partition == partition_for(produced.task_id, settings.topic_partitions)
    message = read_record(settings, topic, produced.partition, produced.offset)
    raw = message.value()
    assert raw is not None and raw[0] == 0
    assert int.from_bytes(raw[1:5], "big") == produced.schema_id
    assert message.key() == produced.task_id.encode() == produced.key.encode()

    value = decode_foreign(settings, message)
    envelope = value["envelope"]
    assert value["query"] == query
    assert envelope["task_id"] == produced.task_id
    assert str(envelope["event_id"]) == str(produced.event_id) == str(event_id_for(produced.task_id, 0))
    assert envelope["sequence"] == 0 and envelope["prev_hash"] is None
    assert envelope["correlation_id"] == produced.task_id
    assert envelope["producer_version"] == SDK_VERSION
    assert abs(envelope["occurred_at"] - datetime.now(UTC)) < timedelta(minutes=5)

    received = message.headers()
    assert isinstance(received, list)  # a consumed record's headers: [(name, bytes)]
    headers = {name: raw_value.decode() for name, raw_value in received if isinstance(raw_value, bytes)}
    assert len(headers) == len(received)
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == str(produced.event_id)
    assert headers["ce_type"] == TaskSubmitted.fullname()
    assert headers["ce_source"] == source
    assert headers["ce_subject"] == produced.task_id
    assert headers["content-type"] == "application/avro"
    assert datetime.fromisoformat(headers["ce_time"]) == envelope["occurred_at"]
    assert TRACEPARENT.match(headers["traceparent"]), headers["traceparent"]
    return {"value": value, "headers": headers}


def test_a_task_submitted_with_the_sdk_runs_to_completion(platform: Settings) -> None:
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    async def submit() -> ProducedRecord:
        async with AgentlogProducer(platform, source="billing-service") as producer:
            return await producer.submit_task(
                query="What is 6 * 7?",
                org_id="acme",
                user_id="sdk-user",
                context={"invoice": "INV-7"},
                priority="HIGH",
                traceparent=traceparent,
            )

    produced = asyncio.run(submit())
    seen = check_submission_on_the_log(platform, produced, query="What is 6 * 7?", source="billing-service")
    assert seen["headers"]["traceparent"] == traceparent
    assert seen["value"]["context"] == {"invoice": "INV-7"} and seen["value"]["priority"] == "HIGH"
    assert seen["value"]["envelope"]["producer"] == "billing-service"
    assert (seen["value"]["envelope"]["org_id"], seen["value"]["envelope"]["user_id"]) == ("acme", "sdk-user")

    assert produced.task_id is not None
    view = wait_until_completed(platform, produced.task_id)
    assert view["status"] == "completed", view
    assert view["result"] == "[offline planner] The result is 42."
    assert (view["org_id"], view["user_id"]) == ("acme", "sdk-user")


def test_a_task_produced_with_the_cli_runs_to_completion(platform: Settings, tmp_path: Path) -> None:
    task_id = f"cli-{uuid.uuid4()}"
    data = tmp_path / "submission.json"
    data.write_text(
        json.dumps(
            {
                "query": "What is 2 + 3?",
                "envelope": {"task_id": task_id, "org_id": "acme", "user_id": "cli-user"},
            }
        )
    )
    result = run_cli(platform, "TaskSubmitted", "--data", f"@{data}", "--json")
    assert result.returncode == 0, result.stderr
    produced = ProducedRecord.model_validate_json(result.stdout)
    assert produced.task_id == task_id

    seen = check_submission_on_the_log(platform, produced, query="What is 2 + 3?", source=SDK_PRODUCER)
    assert seen["value"]["envelope"]["producer"] == SDK_PRODUCER

    view = wait_until_completed(platform, task_id)
    assert view["status"] == "completed", view
    assert view["result"] == "[offline planner] The result is 5."

    # The short form prints where it landed.
    again = run_cli(
        platform,
        "agentlog.events.TaskSubmitted",
        "--data",
        "@-",
        stdin=json.dumps({"query": "What is 1 + 1?", "envelope": {"org_id": "acme", "user_id": "cli-user"}}),
    )
    assert again.returncode == 0, again.stderr
    line = " ".join(again.stdout.split())
    assert re.match(
        rf"^produced {TaskSubmitted.fullname()} to {REQUESTS.name(platform)}\[\d+\]@\d+ task \S+", line
    )


def test_bad_data_produces_nothing_and_names_each_field(platform: Settings) -> None:
    topic = REQUESTS.name(platform)
    before = end_offsets(platform, topic)

    bad = {"query": "x", "priority": "URGENT", "bogus": 1, "envelope": {"org_id": "acme"}}
    result = run_cli(platform, "TaskSubmitted", "--data", "@-", stdin=json.dumps(bad))
    assert result.returncode == 1
    errors = [e.strip() for e in " ".join(result.stderr.split()).split("error: ")[1:]]
    assert errors[:2] == [
        "TaskSubmitted.envelope.user_id: required",
        "TaskSubmitted.priority: must be one of HIGH, NORMAL, LOW (got 'URGENT')",
    ]
    assert errors[2].startswith("TaskSubmitted.bogus: unknown field") and len(errors) == 3
    assert result.stdout == ""

    async def produce_with_the_sdk(*payloads: dict[str, Any]) -> list[EventValidationError]:
        refused = []
        async with AgentlogProducer(platform) as producer:
            for payload in payloads:
                with pytest.raises(EventValidationError) as caught:
                    await producer.produce("TaskSubmitted", payload)
                refused.append(caught.value)
        return refused

    envelope = {"org_id": "acme", "user_id": "sdk-user"}
    model_level, out_of_range_level = asyncio.run(
        produce_with_the_sdk(
            {**bad, "envelope": envelope},
            # Beyond the schema's long (refused by the model's bounds or else by the Avro check).
            {"query": "x", "token_budget": 2**64, "envelope": envelope},
        )
    )
    assert [p.path for p in model_level.problems] == ["TaskSubmitted.priority", "TaskSubmitted.bogus"]
    [out_of_range] = out_of_range_level.problems
    assert (out_of_range.path, out_of_range.value) == ("TaskSubmitted.token_budget", 2**64)
    assert str(out_of_range_level).endswith("(got 18446744073709551616)")
    assert end_offsets(platform, topic) == before


def test_an_event_out_of_avro_range_on_the_events_topic_produces_nothing(platform: Settings) -> None:
    task_id = f"range-{uuid.uuid4()}"
    data = {
        "step": 2**40,
        "idempotency_key": f"{task_id}:1",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "error_type": "Timeout",
        "error": "timed out",
        "latency_ms": 12.5,
        "envelope": {
            "task_id": task_id,
            "sequence": 2,
            "prev_hash": "ab" * 32,
            "org_id": "acme",
            "user_id": "u",
        },
    }
    result = run_cli(platform, LlmCallFailed.record_name, "--data", json.dumps(data))
    assert result.returncode == 1
    # Named with its value, whichever check refuses it (the model's bounds, else the Avro schema's int).
    line = " ".join(result.stderr.split())
    assert line.startswith("error: LlmCallFailed.step: must ") and line.endswith("(got 1099511627776)")
    assert line.count("error: ") == 1
    assert records_keyed(platform, EVENTS.name(platform), task_id) == []


def test_hostile_cli_input_exits_1_with_one_clear_line_and_produces_nothing(
    platform: Settings, tmp_path: Path
) -> None:
    """A sample of what the unit fuzzing (tests/unit/api/test_produce_input.py) generates, through
    the real ``agentlog`` binary against the real topics."""
    not_utf8 = tmp_path / "latin1.json"
    not_utf8.write_bytes(b'{"query": "caf\xe9"}')
    envelope = {"org_id": "acme", "user_id": "u"}
    cases: list[tuple[list[str], str | None, list[str]]] = [
        (["TaskSubmitted", "--data", "not json"], None, ["--data is not valid JSON: Expecting value"]),
        (["TaskSubmitted", "--data", "@-"], "\x00", ["--data is not valid JSON: "]),
        (["TaskSubmitted", "--data", "1" * 5000], None, ["--data is not valid JSON: Exceeds the limit"]),
        (["TaskSubmitted", "--data", "@-"], "[" * 100_000, ["--data is not valid JSON: nested too deeply"]),
        (["TaskSubmitted", "--data", f"@{not_utf8}"], None, [f"@{not_utf8}: not UTF-8 text"]),
        (["TaskSubmitted", "--data", "[1, 2]"], None, ["TaskSubmitted: must be an object"]),
        (["NoSuchEvent", "--data", "{}"], None, ["no topic carries event type 'NoSuchEvent'"]),
        (
            ["TaskSubmitted", "--data", json.dumps({"query": "q\ud800", "envelope": envelope})],
            None,
            ["TaskSubmitted.query: must be valid Unicode text"],
        ),
        (
            [
                "TaskSubmitted",
                "--data",
                json.dumps({"query": 7, "token_budget": "many", "envelope": envelope}),
            ],
            None,
            ["TaskSubmitted.query: must be a string", "TaskSubmitted.token_budget: must be an integer"],
        ),
        (
            [
                "TaskSubmitted",
                "--data",
                json.dumps(
                    {"query": "q", "envelope": {**envelope, "event_id": "nope", "occurred_at": "noon"}}
                ),
            ],
            None,
            [
                "TaskSubmitted.envelope.event_id: must be a UUID",
                "TaskSubmitted.envelope.occurred_at: must be",
            ],
        ),
        (
            [
                "TaskSubmitted",
                "--data",
                json.dumps(
                    {"query": "q", "envelope": {**envelope, "occurred_at": "0001-01-01T00:00:00+23:59"}}
                ),
            ],
            None,
            ["TaskSubmitted.envelope.occurred_at: 0001-01-01T00:00:00+23:59 is out of range"],
        ),
        (
            ["CancellationRequested", "--data", json.dumps({"reason": "x", "header": {"task_id": "t"}})],
            None,
            [
                "CancellationRequested.header.org_id: required",
                "CancellationRequested.header.user_id: required",
            ],
        ),
        (
            ["TaskSubmitted", "--data", json.dumps({"query": "q", "envelope": envelope, "a\nb": 1})],
            None,
            ["TaskSubmitted.'a\\nb': unknown field"],
        ),
    ]
    topics = [REQUESTS.name(platform), EVENTS.name(platform)]
    before = {topic: end_offsets(platform, topic) for topic in topics}
    for args, stdin, expected in cases:
        result = run_cli(platform, *args, stdin=stdin)
        assert result.returncode == 1, (args[:2], result.stdout, result.stderr)
        assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
        errors = [e.strip() for e in " ".join(result.stderr.split()).split("error: ")[1:]]
        assert len(errors) == len(expected), (args[:2], errors)
        for error, start in zip(errors, expected, strict=True):
            assert error.startswith(start), (error, start)
    assert {topic: end_offsets(platform, topic) for topic in topics} == before
