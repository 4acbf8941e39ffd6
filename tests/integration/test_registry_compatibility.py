"""The registry enforces compatibility (default BACKWARD_TRANSITIVE) for Confluent's own client."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.settings import Settings


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
