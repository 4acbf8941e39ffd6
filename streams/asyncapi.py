"""The AsyncAPI 3 document of agentlog's topics, generated from the topic catalogue and the schemas.

:func:`build_document` is pure: it reads only :mod:`streams.topics`, the ``.avsc`` files and
constants (never the environment), so the committed ``docs/asyncapi.yaml`` can be checked for
staleness byte for byte (``agentlog asyncapi --check``; regenerate with ``agentlog asyncapi``).

What it describes:

* one channel per catalogue topic (address = topic name under the default prefix), with the Kafka
  binding's partitions and topic configuration, and the messages the topic carries;
* one message per Avro record: the record's self-contained schema (as registered in the schema
  registry) embedded with the Avro ``schemaFormat``, the CloudEvents Kafka-binding headers, and the
  Kafka key; the value is Confluent-framed (magic byte, 4-byte schema id, Avro body) and the schema
  subject follows TopicRecordNameStrategy (``<topic>-<record full name>``);
* the two JSON topics (task state, schema-registry storage) with what their records hold;
* the operations of the platform's components: who sends and who receives on each channel.
"""

from __future__ import annotations

import copy
import importlib.metadata
from pathlib import Path
from typing import Any

from schemas.events import PAYLOAD_TYPES
from schemas.serde import parsed_schema, record_fullnames
from streams.headers import CONTENT_TYPE, SPEC_VERSION
from streams.settings import Settings
from streams.topics import (
    AUDIT,
    CATALOGUE,
    DEAD_LETTER,
    EVENTS,
    REQUESTS,
    SCHEMAS,
    TASK_STATE,
    TopicSpec,
)

ASYNCAPI_VERSION = "3.0.0"
AVRO_SCHEMA_FORMAT = "application/vnd.apache.avro+json;version=1.9.0"
KAFKA_BINDING_VERSION = "0.5.0"
DEFAULT_PREFIX = "agentlog"
SERVER = "local"
KAFKA_HOST = "127.0.0.1:9092"
SCHEMA_REGISTRY_URL = "http://127.0.0.1:8081"
DOCUMENT_PATH = Path("docs/asyncapi.yaml")
REGENERATE = "agentlog asyncapi"

# Keys of the catalogue's topic config the Kafka channel binding (0.5.0) defines; as integers
# except cleanup.policy (a list). The full config goes under ``x-topic-config`` as well.
_INTEGER_CONFIG = ("retention.ms", "retention.bytes", "delete.retention.ms", "max.message.bytes")

_JSON_MESSAGES: dict[str, dict[str, Any]] = {
    "RegisteredSchemaRecord": {
        "name": "RegisteredSchemaRecord",
        "title": "Registered schema",
        "summary": "One version of a subject in the schema registry's storage.",
        "contentType": "application/json",
        "payload": {
            "type": "object",
            "required": ["subject", "version", "id", "schema"],
            "properties": {
                "subject": {"type": "string", "description": "`<topic>-<record full name>`."},
                "version": {"type": "integer", "minimum": 1},
                "id": {"type": "integer", "minimum": 1, "description": "The id framed into records."},
                "schema": {"type": "string", "description": "The normalised Avro schema text."},
            },
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": 'JSON: {"subject": ..., "version": ...}.'},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    },
    "CompatibilityRecord": {
        "name": "CompatibilityRecord",
        "title": "Compatibility level",
        "summary": "The compatibility level of a subject, or the global default, in the registry's storage.",
        "contentType": "application/json",
        "payload": {
            "type": "object",
            "required": ["config", "compatibility"],
            "properties": {
                "config": {"type": "string", "description": "The subject, or the global marker."},
                "compatibility": {"type": "string", "description": "The compatibility level."},
            },
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": 'JSON: {"config": ...}.'},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    },
}

_JSON_TOPIC_MESSAGES: dict[str, tuple[str, ...]] = {
    SCHEMAS.suffix: ("RegisteredSchemaRecord", "CompatibilityRecord"),
}

# (operation id, action, topic, summary, consumer groups of a receive); groups under the prefix.
_OPERATIONS: tuple[tuple[str, str, TopicSpec, str, tuple[str, ...]], ...] = (
    (
        "submitTask",
        "send",
        REQUESTS,
        "The REST API (and the CLI through it, or any other system) submits a task.",
        (),
    ),
    (
        "runTask",
        "receive",
        REQUESTS,
        "The task processor consumes submissions and runs each task's agent loop.",
        ("{prefix}-processor",),
    ),
    (
        "appendTaskEvents",
        "send",
        EVENTS,
        "The task processor appends each decision's events (acks=all, one batch with its state).",
        (),
    ),
    (
        "checkpointTaskState",
        "send",
        TASK_STATE,
        "The task processor writes the task's state in the same batch as the decision's events.",
        (),
    ),
    (
        "loadTaskState",
        "receive",
        TASK_STATE,
        "A processor worker reads the task states on start, to dedupe redeliveries and resume tasks.",
        (),
    ),
    (
        "projectSubmissions",
        "receive",
        REQUESTS,
        "The projectors (Postgres read model, Elasticsearch audit index) consume the submissions.",
        ("{prefix}-projector-postgres", "{prefix}-projector-elasticsearch"),
    ),
    (
        "projectTaskEvents",
        "receive",
        EVENTS,
        "The projectors (Postgres read model, Elasticsearch audit index) consume the task events.",
        ("{prefix}-projector-postgres", "{prefix}-projector-elasticsearch"),
    ),
    (
        "deadLetter",
        "send",
        DEAD_LETTER,
        "The processor and the projectors park a record they could not decode or process.",
        (),
    ),
    (
        "sealAuditDay",
        "send",
        AUDIT,
        "The auditor (or `agentlog seal`) records the Merkle root of an org's events of a UTC day.",
        (),
    ),
    (
        "verifyAuditSeals",
        "receive",
        AUDIT,
        "`agentlog verify --all` reads the seals and recomputes each root from the task topics.",
        (),
    ),
    (
        "storeSchemas",
        "send",
        SCHEMAS,
        "The schema registry stores each registered schema version and compatibility level.",
        (),
    ),
    (
        "loadSchemas",
        "receive",
        SCHEMAS,
        "The schema registry reads its storage back on start.",
        (),
    ),
)


def _version() -> str:
    try:
        return importlib.metadata.version("agentlog")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


def _message_id(fullname: str) -> str:
    return fullname.rsplit(".", 1)[-1]


def _ref(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)}


def _event_headers(fullname: str) -> dict[str, Any]:
    """JSON schema of the Kafka headers of a task event (CloudEvents Kafka binding, binary mode)."""
    return {
        "type": "object",
        "description": "CloudEvents Kafka protocol binding (binary content mode) and W3C trace context.",
        "required": [
            "ce_specversion",
            "ce_id",
            "ce_type",
            "ce_source",
            "ce_time",
            "ce_subject",
            "content-type",
            "traceparent",
        ],
        "properties": {
            "ce_specversion": {"type": "string", "const": SPEC_VERSION},
            "ce_id": {
                "type": "string",
                "format": "uuid",
                "description": "The envelope's event_id (a request's header.request_id).",
            },
            "ce_type": {"type": "string", "const": fullname, "description": "The record's full name."},
            "ce_source": {
                "type": "string",
                "format": "uri-reference",
                "description": "The producing component, e.g. /agentlog/api or /agentlog/<prefix>-processor.",
            },
            "ce_time": {
                "type": "string",
                "format": "date-time",
                "description": "The envelope's occurred_at (a request's header.issued_at), UTC, in ms.",
            },
            "ce_subject": {"type": "string", "description": "The task id."},
            "content-type": {"type": "string", "const": CONTENT_TYPE},
            "traceparent": {
                "type": "string",
                "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "description": "W3C trace context, continued across the task's events.",
            },
        },
    }


def _avro_message(fullname: str) -> dict[str, Any]:
    schema = parsed_schema(fullname)
    name = _message_id(fullname)
    dead_letter = fullname in DEAD_LETTER.event_types
    seal = fullname in AUDIT.event_types
    message: dict[str, Any] = {
        "name": name,
        "title": name,
        "summary": schema.get("doc", ""),
        "description": (
            "Value: Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary body); "
            f"schema subject `<topic>-{fullname}` (TopicRecordNameStrategy)."
        ),
        "contentType": CONTENT_TYPE,
        "payload": _ref("components", "schemas", name),
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "description": (
                        "`<source topic>/<partition>/<offset>` of the parked record (UTF-8)."
                        if dead_letter
                        else "`<org id>/<day>` of the sealed day (UTF-8)."
                        if seal
                        else "The task id (UTF-8): a task's records share a partition, in order."
                    ),
                },
                "schemaIdLocation": "payload",
                "schemaIdPayloadEncoding": "confluent",
                "schemaLookupStrategy": "TopicRecordNameStrategy",
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
    if not dead_letter:
        message["headers"] = _event_headers(fullname)
    if fullname in PAYLOAD_TYPES:
        message["correlationId"] = {
            "description": "The task's correlation id, carried by every event of the task.",
            "location": "$message.payload#/envelope/correlation_id",
        }
    return message


def _channel_binding(spec: TopicSpec, address: str) -> dict[str, Any]:
    topic_config: dict[str, Any] = {}
    if "cleanup.policy" in spec.config:
        topic_config["cleanup.policy"] = spec.config["cleanup.policy"].split(",")
    for key in _INTEGER_CONFIG:
        if key in spec.config:
            topic_config[key] = int(spec.config[key])
    binding: dict[str, Any] = {
        "topic": address,
        "partitions": spec.partitions or Settings.model_fields["topic_partitions"].default,
        "bindingVersion": KAFKA_BINDING_VERSION,
    }
    if topic_config:
        binding["topicConfiguration"] = topic_config
    return binding


def _channel(spec: TopicSpec, address: str) -> dict[str, Any]:
    description = spec.description
    if spec.partitions is None:
        description += " Partitions: AGENTLOG_TOPIC_PARTITIONS (the count shown is the default)."
    message_ids = [_message_id(name) for name in spec.event_types] + list(
        _JSON_TOPIC_MESSAGES.get(spec.suffix, ())
    )
    channel: dict[str, Any] = {
        "address": address,
        "title": spec.suffix,
        "description": description,
        "servers": [_ref("servers", SERVER)],
        "bindings": {"kafka": _channel_binding(spec, address)},
        "x-key": spec.key,
        "x-topic-config": dict(spec.config),
    }
    if message_ids:
        channel["messages"] = {mid: _ref("components", "messages", mid) for mid in message_ids}
    return channel


def _operations(prefix: str, channels: dict[str, Any]) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for operation_id, action, spec, summary, groups in _OPERATIONS:
        operation: dict[str, Any] = {
            "action": action,
            "channel": _ref("channels", spec.suffix),
            "summary": summary,
        }
        messages = channels[spec.suffix].get("messages", {})
        if messages:
            operation["messages"] = [_ref("channels", spec.suffix, "messages", mid) for mid in messages]
        if groups:
            operation["bindings"] = {
                "kafka": {
                    "groupId": {"type": "string", "enum": [group.format(prefix=prefix) for group in groups]},
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            }
        operations[operation_id] = operation
    return operations


def build_document(prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of agentlog's topics under topic prefix ``prefix``."""
    settings = Settings.model_construct(topic_prefix=prefix)  # no environment: the document is pure
    fullnames = record_fullnames()
    if len({_message_id(name) for name in fullnames}) != len(fullnames):
        raise ValueError(f"two records share a short name: {fullnames}")
    channels = {spec.suffix: _channel(spec, spec.name(settings)) for spec in CATALOGUE}
    messages: dict[str, Any] = {_message_id(name): _avro_message(name) for name in fullnames}
    messages.update(copy.deepcopy(_JSON_MESSAGES))
    schemas = {
        _message_id(name): {"schemaFormat": AVRO_SCHEMA_FORMAT, "schema": copy.deepcopy(parsed_schema(name))}
        for name in fullnames
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:agentlog",
        "info": {
            "title": "agentlog",
            "version": _version(),
            "description": (
                "Kafka topics of agentlog, an event-sourced multi-agent AI platform. Generated from "
                f"streams/topics.py and schemas/avro by `{REGENERATE}`; do not edit by hand.\n\n"
                "Task events are Avro records in the Confluent wire format (magic byte 0, 4-byte "
                "big-endian schema id, Avro binary body), registered under TopicRecordNameStrategy "
                "subjects (`<topic>-<record full name>`), with CloudEvents Kafka-binding headers "
                "(binary mode) and a W3C `traceparent`. Topic names carry the prefix "
                f"`{prefix}.` (AGENTLOG_TOPIC_PREFIX)."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            SERVER: {
                "host": KAFKA_HOST,
                "protocol": "kafka",
                "description": "The local stack (deploy/local); AGENTLOG_KAFKA_BOOTSTRAP points elsewhere.",
                "bindings": {
                    "kafka": {
                        "schemaRegistryUrl": SCHEMA_REGISTRY_URL,
                        "schemaRegistryVendor": "confluent",
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            }
        },
        "channels": channels,
        "operations": _operations(prefix, channels),
        "components": {"messages": messages, "schemas": schemas},
    }


def render(document: dict[str, Any] | None = None) -> str:
    """The document as YAML: sorted keys, no anchors, stable line breaks (byte-exact regeneration)."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(
        build_document() if document is None else document,
        Dumper=_Dumper,
        sort_keys=True,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


def write_document(path: Path = DOCUMENT_PATH) -> bool:
    """Write the generated document to ``path``; whether its content changed."""
    text = render()
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def check_document(path: Path = DOCUMENT_PATH) -> bool:
    """Whether ``path`` holds exactly the document generated from the current catalogue and schemas."""
    return path.exists() and path.read_text(encoding="utf-8") == render()
