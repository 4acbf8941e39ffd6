"""One task end to end on the real stack: REST -> Kafka -> processor -> projections -> REST."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import subprocess
import sys
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.history import partition_for
from streams.settings import Settings
from streams.topics import EVENTS, REQUESTS
from tests.integration.conftest import QUERY, api, pg_rows, wait_for

EXPECTED_TYPES = [
    "TaskSubmitted",
    "TaskAccepted",
    "LlmCallRequested",
    "LlmCallCompleted",
    "ToolCallRequested",
    "ToolCallAuthorized",
    "ToolCallCompleted",
    "LlmCallRequested",
    "LlmCallCompleted",
    "TaskCompleted",
]


def test_completed_task_is_served_by_the_rest_api(platform: Settings, completed_task: dict[str, Any]) -> None:
    view = completed_task
    assert view["query"] == QUERY
    assert (view["org_id"], view["user_id"]) == ("acme", "alice")
    assert view["result"] == "[offline planner] The result is 126."
    assert view["offline"] is True and view["provider"] == "offline"
    assert (view["llm_calls"], view["tool_calls"], view["steps"]) == (2, 1, 2)
    assert view["total_tokens"] == view["prompt_tokens"] + view["completion_tokens"] > 0
    assert view["last_sequence"] == len(EXPECTED_TYPES) - 1
    with api(platform) as client:
        page = client.get(f"/v1/tasks/{view['task_id']}/events").json()
        assert [e["event_type"] for e in page["events"]] == EXPECTED_TYPES
        assert page["next_after"] is None
        first = client.get(f"/v1/tasks/{view['task_id']}/events", params={"limit": 4}).json()
        rest = client.get(
            f"/v1/tasks/{view['task_id']}/events", params={"after_sequence": first["next_after"]}
        ).json()
        assert [e["sequence"] for e in first["events"] + rest["events"]] == list(range(len(EXPECTED_TYPES)))
        missing = client.get("/v1/tasks/no-such-task")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


def _end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "agentlog-tests-offsets"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
    finally:
        consumer.close()


def test_invalid_submissions_get_422_and_produce_nothing(platform: Settings) -> None:
    topic = REQUESTS.name(platform)
    before = _end_offsets(platform, topic)
    bad_bodies: list[Any] = [
        {"session_id": "s"},
        {"query": ""},
        {"query": "hi", "session_id": "not valid!"},
        {"query": "hi", "priority": "URGENT"},
        {"query": "hi", "surprise": 1},
        {"query": "hi", "org_id": "someone-elses-org"},  # the org is the caller's, never the body's
        [1, 2, 3],
    ]
    with api(platform) as client:
        for body in bad_bodies:
            response = client.post("/v1/tasks", json=body)
            assert response.status_code == 422, (body, response.text)
            problem = response.json()
            assert response.headers["content-type"] == "application/problem+json"
            assert problem["status"] == 422 and problem["errors"] and problem["detail"]
        missing = client.post("/v1/tasks", json={"session_id": "s"}).json()
        assert [e["field"] for e in missing["errors"]] == ["query"]
        garbage = client.post("/v1/tasks", content=b"{not json", headers={"content-type": "application/json"})
        assert garbage.status_code == 422
    assert _end_offsets(platform, topic) == before


def _read_task_records(settings: Settings, topic: str, task_id: str) -> list[Any]:
    """The task's records on ``topic``, read with confluent-kafka (librdkafka), not our own client."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "agentlog-tests",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        partition = partition_for(task_id, partitions)
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, 0)])
        records = []
        while high and (not records or records[-1].offset() < high - 1):
            message = consumer.poll(5)
            assert message is not None, f"no record from {topic}[{partition}] before offset {high}"
            assert message.error() is None, message.error()
            records.append(message)
        return [r for r in records if r.key() == task_id.encode()]
    finally:
        consumer.close()


def test_events_decode_with_confluents_client_and_registry(
    platform: Settings, completed_task: dict[str, Any]
) -> None:
    task_id = completed_task["task_id"]
    registry = SchemaRegistryClient({"url": platform.schema_registry_url})
    deserialize = AvroDeserializer(registry)
    decoded = []
    trace_ids: set[str] = set()
    for topic in (REQUESTS.name(platform), EVENTS.name(platform)):
        for record in _read_task_records(platform, topic, task_id):
            value = record.value()
            schema_id = int.from_bytes(value[1:5], "big")
            name = json.loads(registry.get_schema(schema_id).schema_str)["name"]
            # TopicRecordNameStrategy: the writer schema is registered under "<topic>-<record>".
            assert registry.get_latest_version(f"{topic}-{name}").schema_id == schema_id
            record_value = deserialize(value, SerializationContext(topic, MessageField.VALUE))
            headers = dict(record.headers() or [])
            assert headers["ce_id"].decode() == str(record_value["envelope"]["event_id"])
            assert headers["ce_type"].decode() == name
            assert headers["ce_specversion"] == b"1.0"
            trace_ids.add(headers["traceparent"].decode().split("-")[1])
            decoded.append((record_value, hashlib.sha256(value[5:]).hexdigest()))
    assert len(trace_ids) == 1, "the trace started at the API must continue through the processor"
    decoded.sort(key=lambda item: item[0]["envelope"]["sequence"])
    assert [v["envelope"]["sequence"] for v, _ in decoded] == list(range(len(EXPECTED_TYPES)))
    assert decoded[0][0]["query"] == QUERY
    assert decoded[0][0]["envelope"]["prev_hash"] is None
    for (previous, previous_digest), (current, _) in itertools.pairwise(decoded):
        assert current["envelope"]["prev_hash"] == previous_digest
        assert current["envelope"]["causation_id"] == str(previous["envelope"]["event_id"])
    assert decoded[-1][0]["result"] == "[offline planner] The result is 126."


def test_postgres_read_model_holds_the_task_and_its_events(
    platform: Settings, completed_task: dict[str, Any]
) -> None:
    task_id = completed_task["task_id"]
    row = pg_rows(platform, "SELECT * FROM task_executions WHERE task_id = %s", task_id)[0]
    assert row["status"] == "completed" and row["event_count"] == len(EXPECTED_TYPES)
    events = pg_rows(
        platform,
        "SELECT sequence, event_type, topic FROM task_events WHERE task_id = %s ORDER BY sequence",
        task_id,
    )
    assert [e["event_type"] for e in events] == EXPECTED_TYPES
    assert {e["topic"] for e in events} == {REQUESTS.name(platform), EVENTS.name(platform)}
    offsets = pg_rows(
        platform,
        "SELECT topic, sum(next_offset) AS n FROM projection_offsets WHERE projector = 'postgres'"
        " AND topic LIKE %s GROUP BY topic",
        f"{platform.topic_prefix}.%",
    )
    assert {o["topic"] for o in offsets} >= {REQUESTS.name(platform), EVENTS.name(platform)}


def test_elasticsearch_audit_index_holds_every_event(
    platform: Settings, completed_task: dict[str, Any]
) -> None:
    task_id = completed_task["task_id"]
    alias = platform.es_index_prefix
    search = f"{platform.elasticsearch_url}/{alias}/_search"

    def hits() -> list[dict[str, Any]] | None:
        httpx.post(f"{platform.elasticsearch_url}/{alias}/_refresh")
        body = {"query": {"term": {"task_id": task_id}}, "size": 100, "sort": [{"sequence": "asc"}]}
        found = httpx.post(search, json=body).json()["hits"]["hits"]
        return found if len(found) == len(EXPECTED_TYPES) else None

    documents = wait_for(hits, 30, "all events of the task in Elasticsearch")
    assert [d["_source"]["event_type"] for d in documents] == EXPECTED_TYPES
    assert all(d["_id"] == d["_source"]["event_id"] for d in documents)
    mapping = httpx.get(f"{platform.elasticsearch_url}/{alias}/_mapping").json()
    properties = next(iter(mapping.values()))["mappings"]["properties"]
    assert properties["task_id"]["type"] == "keyword"
    assert properties["payload"]["properties"]["query"]["type"] == "text"
    full_text = httpx.post(
        search,
        json={
            "query": {
                "bool": {
                    "must": {"match": {"payload.query": "17 25"}},
                    "filter": {"term": {"task_id": task_id}},
                }
            }
        },
    ).json()
    assert [h["_source"]["event_type"] for h in full_text["hits"]["hits"]] == ["TaskSubmitted"]


def test_replay_prints_the_timeline_from_kafka(platform: Settings, completed_task: dict[str, Any]) -> None:
    task_id = completed_task["task_id"]
    env = _cli_env(platform)
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "replay", task_id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["event_type"] for r in rows] == EXPECTED_TYPES
    assert rows[5]["tool"] == "calculator" and rows[5]["detail"] == "allowed by calculator-everyone"
    assert rows[6]["tool"] == "calculator" and rows[6]["detail"] == "126"
    table = subprocess.run(
        [sys.executable, "-m", "api.cli", "replay", task_id],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        table.returncode == 0 and "ToolCallCompleted" in table.stdout and "[offline planner]" in table.stdout
    )
    unknown = subprocess.run(
        [sys.executable, "-m", "api.cli", "replay", "no-such-task"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 1 and "no events of task no-such-task" in unknown.stderr


def _cli_env(settings: Settings) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "AGENTLOG_TOPIC_PREFIX": settings.topic_prefix,
        "AGENTLOG_REGISTRY_PORT": str(settings.registry_port),
        "AGENTLOG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
    }


def test_history_reader_matches_postgres(platform: Settings, completed_task: dict[str, Any]) -> None:
    from schemas.codec import EventCodec
    from schemas.registry.client import RegistryClient
    from streams.history import read_task_events

    async def read() -> list[Any]:
        registry = RegistryClient(platform.schema_registry_url)
        try:
            return await read_task_events(platform, EventCodec(registry), completed_task["task_id"])
        finally:
            await registry.close()

    events = asyncio.run(read())
    rows = pg_rows(
        platform,
        "SELECT event_id, digest FROM task_events WHERE task_id = %s ORDER BY sequence",
        completed_task["task_id"],
    )
    assert [(e.envelope.event_id, e.digest) for e in events] == [(r["event_id"], r["digest"]) for r in rows]
