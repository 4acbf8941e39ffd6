"""Schema storage of the registry, kept on a compacted Kafka topic like Confluent's ``_schemas``.

The registry is a single writer: on start it reads the topic to its end, then serves from memory and
appends each new registration (acks=all) before answering. Ids are global: the same schema text
registered under two subjects gets one id, as in Confluent's registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import fastavro
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.registry.compatibility import DEFAULT_LEVEL, Level, incompatibilities

log = logging.getLogger(__name__)


class SchemaParseError(ValueError):
    """The submitted text is not a valid Avro schema."""


class IncompatibleSchemaError(ValueError):
    """The schema breaks the subject's compatibility level with what is already registered."""


GLOBAL = "__GLOBAL"


@dataclass(frozen=True)
class RegisteredSchema:
    subject: str
    version: int
    id: int
    schema: str


def normalize(schema_text: str) -> str:
    """Parse and re-serialize a schema so equal schemas compare equal regardless of whitespace/order.

    Docs and defaults are kept: they are part of the contract (a default matters for compatibility).
    """
    try:
        parsed = json.loads(schema_text)
        fastavro.parse_schema(parsed)
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        raise SchemaParseError(f"invalid Avro schema: {exc}") from exc
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"))


class SchemaStore:
    """In-memory view of the registry topic, and the only writer to it."""

    def __init__(self) -> None:
        self._by_subject: dict[str, list[RegisteredSchema]] = {}
        self._by_id: dict[int, str] = {}
        self._id_by_schema: dict[str, int] = {}
        self._levels: dict[str, Level] = {}  # subject (GLOBAL for the default) -> compatibility
        self._lock = asyncio.Lock()
        self._producer: AIOKafkaProducer | None = None
        self._topic = ""

    # -- reads -------------------------------------------------------------------------------
    def level(self, subject: str | None = None) -> Level | None:
        """The compatibility set for ``subject`` (None: the global one); None when none is set."""
        return self._levels.get(subject or GLOBAL)

    def effective_level(self, subject: str) -> Level:
        return self._levels.get(subject) or self._levels.get(GLOBAL) or Level(DEFAULT_LEVEL)

    def subjects(self) -> list[str]:
        return sorted(self._by_subject)

    def versions(self, subject: str) -> list[RegisteredSchema]:
        return list(self._by_subject.get(subject, []))

    def schema_by_id(self, schema_id: int) -> str | None:
        return self._by_id.get(schema_id)

    def lookup(self, subject: str, schema_text: str) -> RegisteredSchema | None:
        wanted = normalize(schema_text)
        for registered in self._by_subject.get(subject, []):
            if registered.schema == wanted:
                return registered
        return None

    def subjects_of(self, schema_id: int) -> list[RegisteredSchema]:
        return [r for versions in self._by_subject.values() for r in versions if r.id == schema_id]

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, bootstrap: str, topic: str) -> None:
        """Read the registry topic to its end, then open the producer used for registrations."""
        self._topic = topic
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.value is not None:
                        self._apply(json.loads(record.value))
        finally:
            await consumer.stop()
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await self._producer.start()
        log.info("schema store loaded %d schemas in %d subjects", len(self._by_id), len(self._by_subject))

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    # -- writes ------------------------------------------------------------------------------
    async def register(self, subject: str, schema_text: str) -> RegisteredSchema:
        """Register ``schema_text`` under ``subject``; idempotent for a schema already there."""
        normalized = normalize(schema_text)
        async with self._lock:
            existing = self.lookup(subject, normalized)
            if existing is not None:
                return existing
            if problems := self.check(subject, normalized):
                raise IncompatibleSchemaError(
                    f"Schema being registered is incompatible with an earlier schema for subject "
                    f"'{subject}' ({self.effective_level(subject).value}): " + "; ".join(problems)
                )
            schema_id = self._id_by_schema.get(normalized, max(self._by_id, default=0) + 1)
            version = len(self._by_subject.get(subject, [])) + 1
            record = {"subject": subject, "version": version, "id": schema_id, "schema": normalized}
            if self._producer is None:
                raise RuntimeError("schema store not started")
            key = json.dumps({"subject": subject, "version": version}).encode()
            await self._producer.send_and_wait(self._topic, json.dumps(record).encode(), key=key)
            self._apply(record)
            return RegisteredSchema(subject=subject, version=version, id=schema_id, schema=normalized)

    def check(self, subject: str, schema_text: str) -> list[str]:
        """Why ``schema_text`` may not be registered under ``subject`` at its level (empty: it may)."""
        previous = [r.schema for r in self._by_subject.get(subject, [])]
        return incompatibilities(self.effective_level(subject), normalize(schema_text), previous)

    async def set_level(self, subject: str | None, level: Level) -> None:
        """Set the compatibility of ``subject`` (None: the global default), durably."""
        record = {"config": subject or GLOBAL, "compatibility": level.value}
        if self._producer is None:
            raise RuntimeError("schema store not started")
        async with self._lock:
            key = json.dumps({"config": subject or GLOBAL}).encode()
            await self._producer.send_and_wait(self._topic, json.dumps(record).encode(), key=key)
            self._apply(record)

    def _apply(self, record: dict[str, Any]) -> RegisteredSchema | None:
        if "config" in record:
            self._levels[record["config"]] = Level(record["compatibility"])
            return None
        registered = RegisteredSchema(
            subject=record["subject"], version=record["version"], id=record["id"], schema=record["schema"]
        )
        self._by_subject.setdefault(registered.subject, []).append(registered)
        self._by_id[registered.id] = registered.schema
        self._id_by_schema[registered.schema] = registered.id
        return registered
