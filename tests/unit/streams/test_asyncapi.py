"""The AsyncAPI document: committed and fresh, complete, and internally consistent."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml

from schemas.events import PAYLOAD_TYPES, Envelope, Event, RecordDeadLettered, TaskSubmitted
from schemas.serde import parsed_schema
from streams.asyncapi import (
    AVRO_SCHEMA_FORMAT,
    REGENERATE,
    build_document,
    check_document,
    render,
    write_document,
)
from streams.headers import event_headers
from streams.settings import Settings
from streams.topics import CATALOGUE

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "asyncapi.yaml"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document()


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_committed_document_is_fresh() -> None:
    assert check_document(COMMITTED), f"{COMMITTED} is stale: run `{REGENERATE}` and commit it"


def test_generation_is_deterministic_and_yaml_roundtrips() -> None:
    text = render()
    assert text == render()
    assert yaml.safe_load(text) == build_document()
    assert "&id" not in text  # no YAML anchors: every node is spelled out


def test_write_then_check(tmp_path: Path) -> None:
    path = tmp_path / "docs" / "asyncapi.yaml"
    assert not check_document(path)
    assert write_document(path)
    assert check_document(path)
    assert not write_document(path)
    path.write_text(path.read_text() + "# edited\n")
    assert not check_document(path)


def test_required_top_level_fields(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "agentlog"
    assert document["info"]["version"]
    server = document["servers"]["local"]
    assert (server["protocol"], server["host"]) == ("kafka", "127.0.0.1:9092")
    assert set(document) <= {
        "asyncapi",
        "id",
        "info",
        "servers",
        "defaultContentType",
        "channels",
        "operations",
        "components",
    }


def test_every_topic_is_a_channel(document: dict[str, Any]) -> None:
    settings = Settings.model_construct(topic_prefix="agentlog")
    channels = document["channels"]
    assert set(channels) == {spec.suffix for spec in CATALOGUE}
    for spec in CATALOGUE:
        channel = channels[spec.suffix]
        assert channel["address"] == spec.name(settings)
        assert spec.description in channel["description"]
        kafka = channel["bindings"]["kafka"]
        assert kafka["partitions"] == spec.partition_count(settings)
        assert kafka["topicConfiguration"]["cleanup.policy"] == spec.config["cleanup.policy"].split(",")
        carried = {_resolve(document, m["$ref"])["name"] for m in channel.get("messages", {}).values()}
        assert {name.rsplit(".", 1)[-1] for name in spec.event_types} <= carried


def test_prefix_moves_addresses() -> None:
    channels = build_document(prefix="staging")["channels"]
    assert {channel["address"] for channel in channels.values()} == {
        f"staging.{spec.suffix}" for spec in CATALOGUE
    }


def test_every_record_has_a_message_with_its_avro_schema(document: dict[str, Any]) -> None:
    components = document["components"]
    for fullname in [*PAYLOAD_TYPES, RecordDeadLettered.fullname()]:
        name = fullname.rsplit(".", 1)[-1]
        message = components["messages"][name]
        schema = _resolve(document, message["payload"]["$ref"])
        assert schema["schemaFormat"] == AVRO_SCHEMA_FORMAT
        assert schema["schema"] == parsed_schema(fullname)
        fastavro.parse_schema(schema["schema"])
        assert message["bindings"]["kafka"]["key"]["type"] == "string"


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs = _refs(document)
    assert refs
    for ref in refs:
        _resolve(document, ref)


def test_operations_use_their_channels_messages(document: dict[str, Any]) -> None:
    for operation_id, operation in document["operations"].items():
        assert operation["action"] in ("send", "receive"), operation_id
        channel_ref = operation["channel"]["$ref"]
        _resolve(document, channel_ref)
        for message in operation.get("messages", []):
            assert message["$ref"].startswith(channel_ref + "/messages/"), operation_id
            _resolve(document, message["$ref"])
    used = {operation["channel"]["$ref"] for operation in document["operations"].values()}
    assert used == {f"#/channels/{spec.suffix}" for spec in CATALOGUE}


def test_headers_schema_matches_what_the_producer_sends(document: dict[str, Any]) -> None:
    envelope = Envelope(
        event_id=uuid.uuid4(),
        task_id="t-1",
        org_id="o",
        user_id="u",
        sequence=0,
        occurred_at=datetime.now(UTC),
        correlation_id="c",
        producer="test",
        producer_version="0",
    )
    event = Event(envelope=envelope, payload=TaskSubmitted(query="q"), digest="0" * 64)
    sent = dict(event_headers(event, source="/agentlog/test"))
    headers = document["components"]["messages"]["TaskSubmitted"]["headers"]
    assert set(headers["properties"]) == set(sent)
    assert set(headers["required"]) == set(sent)
    for name, value in sent.items():
        prop = headers["properties"][name]
        if "const" in prop:
            assert value.decode() == prop["const"], name
        if "pattern" in prop:
            assert re.fullmatch(prop["pattern"], value.decode()), name
