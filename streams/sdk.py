"""The producer SDK: other Python systems produce any catalogued event, validated before it is sent.

``AgentlogProducer.produce(event_type, data)`` takes an event type (``TaskSubmitted`` or
``agentlog.events.TaskSubmitted``) and the payload's fields, plus an optional ``envelope`` object
overriding envelope fields. It works for every type the topic catalogue carries, with nothing
listed here: a new event type in ``schemas/events.py`` and the catalogue is producible at once.

The pure core is :func:`prepare`: it resolves the topic, fills the envelope's defaults, validates the
data against the pydantic model and then against the Avro schema (ranges pydantic does not know,
e.g. an Avro ``int``), and encodes the body. Every broken rule is collected into one
:class:`EventValidationError` that names each field; nothing reaches Kafka when one is raised.

The shell, :class:`AgentlogProducer`, registers (or looks up) the schema under the platform's
subject strategy, frames the body, and sends it with the platform's producer settings (acks=all,
idempotent), waiting for the acknowledgement.
"""

from __future__ import annotations

import importlib.metadata
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from types import TracebackType
from typing import Any, Self

from aiokafka.structs import RecordMetadata
from fastavro.validation import validate as avro_valid
from pydantic import BaseModel, ConfigDict, ValidationError

from processors.task.history import event_id_for
from schemas.codec import EventCodec
from schemas.events import (
    PAYLOAD_TYPES,
    Envelope,
    Event,
    Payload,
    Priority,
    RecordDeadLettered,
    TaskSubmitted,
)
from schemas.registry.client import RegistryClient, subject_for
from schemas.requests import REQUEST_TYPES, TaskRequest
from schemas.serde import (
    decode_dead_letter,
    decode_request,
    digest,
    encode_dead_letter,
    encode_request,
    parsed_schema,
    schema_json,
    seal,
)
from streams.headers import event_headers, header_map
from streams.history import partition_for
from streams.producer import EventProducer
from streams.settings import Settings, get_settings
from streams.topics import CATALOGUE, TASK_TOPICS, TopicSpec

SDK_PRODUCER = "agentlog-sdk"
SDK_VERSION = importlib.metadata.version("agentlog")
_ENVELOPE = "envelope"
# Stands in for the fields derived from validated ones (event id, correlation id) during validation.
_PENDING_ID = uuid.UUID(int=0)


class UnknownEventTypeError(LookupError):
    """No topic of the catalogue carries the named event type."""


class FieldProblem(BaseModel):
    """One broken rule: the field's path (``TaskSubmitted.envelope.task_id``), the rule, the value."""

    model_config = ConfigDict(frozen=True)

    path: str
    rule: str
    value: Any = None
    given: bool = True  # False when the field was absent: there is no offending value to show

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}" + (f" (got {_shown(self.value)})" if self.given else "")


class EventValidationError(ValueError):
    """The data does not make a valid event of its type; ``problems`` names every broken field."""

    def __init__(self, event_type: str, problems: Sequence[FieldProblem]) -> None:
        self.event_type = event_type
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass(frozen=True)
class CatalogueEntry:
    """An event type some topic of the catalogue carries: its model, its topic, its schema's doc."""

    fullname: str
    model: type[Payload] | type[RecordDeadLettered] | type[TaskRequest]
    topic: TopicSpec
    doc: str

    @property
    def name(self) -> str:
        return self.fullname.rsplit(".", 1)[-1]

    @property
    def is_task_event(self) -> bool:
        """True for a task's events (enveloped, keyed by task id); false for a dead letter."""
        return self.fullname in PAYLOAD_TYPES

    @property
    def starts_task(self) -> bool:
        """True for a submission: the only event a system other than the processor starts a task with."""
        return self.fullname == TaskSubmitted.fullname()

    @property
    def is_request(self) -> bool:
        """True for a request to a running task (cancellation, approval decision)."""
        return self.fullname in REQUEST_TYPES

    @property
    def in_history(self) -> bool:
        """True for the events of a task's history (the task topics), whose ids derive from the sequence."""
        return any(self.topic is spec for spec in TASK_TOPICS)


def event_types() -> list[CatalogueEntry]:
    """Every producible event type, in catalogue order."""
    return list(_catalogue_entries())


@cache
def _catalogue_entries() -> tuple[CatalogueEntry, ...]:
    models: dict[str, type[Payload] | type[RecordDeadLettered] | type[TaskRequest]] = {
        **PAYLOAD_TYPES,
        RecordDeadLettered.fullname(): RecordDeadLettered,
        **REQUEST_TYPES,
    }
    return tuple(
        CatalogueEntry(
            fullname=fullname,
            model=models[fullname],
            topic=spec,
            doc=" ".join(str(parsed_schema(fullname).get("doc", "")).split()),
        )
        for spec in CATALOGUE
        for fullname in spec.event_types
        # A seal's root is computed from the log by the auditor; one produced by hand would prove nothing.
        if fullname in models
    )


def resolve_event_type(event_type: str) -> CatalogueEntry:
    """The catalogue entry of ``event_type``, given by short name or Avro full name."""
    entries = _catalogue_entries()
    for entry in entries:
        if event_type in (entry.fullname, entry.name):
            return entry
    producible = ", ".join(entry.name for entry in entries)
    raise UnknownEventTypeError(f"no topic carries event type {event_type!r}; producible types: {producible}")


@dataclass(frozen=True)
class PreparedRecord:
    """A validated, encoded record and where it goes: what :class:`AgentlogProducer` sends."""

    entry: CatalogueEntry
    topic: str
    key: bytes
    body: bytes  # the Avro body (schemaless); the registry's schema id frames it on send
    record: Event | RecordDeadLettered | TaskRequest

    @property
    def record_id(self) -> uuid.UUID:
        """The event id (a dead letter's ``dead_letter_id``, a request's ``request_id``)."""
        if isinstance(self.record, Event):
            return self.record.envelope.event_id
        if isinstance(self.record, TaskRequest):
            return self.record.header.request_id
        return self.record.dead_letter_id

    @property
    def task_id(self) -> str | None:
        return self.record.task_id if isinstance(self.record, Event | TaskRequest) else None

    def headers(self, *, source: str, traceparent: str | None = None) -> list[tuple[str, bytes]]:
        """The platform's headers of a task event (CloudEvents + trace context); none for a dead letter.

        A dead letter goes out as the platform's own dead-lettering sends it: without headers.
        """
        if isinstance(self.record, Event | TaskRequest):
            return event_headers(self.record, source=source, traceparent=traceparent)
        return []

    def describe(self, settings: Settings, headers: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
        """The record's fields as JSON-ready data: what a dry run shows instead of producing."""
        if isinstance(self.record, Event):
            fields = {
                _ENVELOPE: self.record.envelope.model_dump(mode="json"),
                **self.record.payload.model_dump(mode="json"),
            }
        else:
            fields = self.record.model_dump(mode="json")
        return {
            "event_type": self.entry.fullname,
            "topic": self.topic,
            "partition": partition_for(self.key.decode(), self.entry.topic.partition_count(settings)),
            "key": self.key.decode(),
            "headers": header_map(list(headers)),
            "subject": subject_for(self.topic, self.entry.fullname),
            "schema_id": None,  # assigned by the registry when the record is produced
            "avro_body_bytes": len(self.body),
            "digest": digest(self.body),
            "event_id": str(self.record_id),
            "task_id": self.task_id,
            "value": fields,
        }


def prepare(
    event_type: str,
    data: Any,
    *,
    settings: Settings,
    now: datetime,
    new_id: uuid.UUID,
    producer: str = SDK_PRODUCER,
    producer_version: str = SDK_VERSION,
) -> PreparedRecord:
    """Validate ``data`` as an event of ``event_type`` and encode it, with the envelope's defaults.

    Pure: ``now`` is the event's time unless the envelope gives ``occurred_at``; ``new_id`` is the id
    of what the record starts when the caller gives none (a submission's task id, a dead letter's
    id). Raises :class:`UnknownEventTypeError` or :class:`EventValidationError`.
    """
    entry = resolve_event_type(event_type)
    if not isinstance(data, Mapping):
        problem = FieldProblem(path=entry.name, rule="must be an object of the event's fields", value=data)
        raise EventValidationError(entry.fullname, [problem])
    topic = entry.topic.name(settings)
    if entry.is_request:
        request, body = _request(entry, data, now, new_id, producer, producer_version)
        return PreparedRecord(
            entry=entry, topic=topic, key=request.task_id.encode(), body=body, record=request
        )
    if entry.is_task_event:
        event, body = _task_event(entry, data, topic, now, new_id, producer, producer_version)
        return PreparedRecord(entry=entry, topic=topic, key=event.task_id.encode(), body=body, record=event)
    dead_letter, body = _dead_letter(entry, data, now, new_id)
    return PreparedRecord(
        entry=entry,
        topic=topic,
        # The catalogue's key rule for dead letters (as EventProducer.dead_letter keys them).
        key=f"{dead_letter.source_topic}/{dead_letter.source_partition}/{dead_letter.source_offset}".encode(),
        body=body,
        record=dead_letter,
    )


def _task_event(
    entry: CatalogueEntry,
    data: Mapping[str, Any],
    topic: str,
    now: datetime,
    new_id: uuid.UUID,
    producer: str,
    producer_version: str,
) -> tuple[Event, bytes]:
    name = entry.name
    fields = {key: value for key, value in data.items() if key != _ENVELOPE}
    given = data.get(_ENVELOPE, {})
    problems = _Problems()
    if not isinstance(given, Mapping):
        problems.add(FieldProblem(path=f"{name}.{_ENVELOPE}", rule="must be an object", value=given))
        given = {}
    if not entry.starts_task:
        # Only a submission starts a task. Anything else continues one whose single writer is the
        # processor, so where it belongs (task, sequence) is never guessed.
        required = {"task_id": "it continues an existing task", "sequence": "it continues an existing task"}
        if not entry.in_history:
            # The platform derives ids from (task id, sequence) only for a task's history: the id of
            # another record (e.g. a checkpoint) follows its own rule, which is not guessed either.
            required["event_id"] = "the SDK derives ids only for events of a task's history"
        for field, why in required.items():
            if field not in given:
                problems.add(
                    FieldProblem(
                        path=f"{name}.{_ENVELOPE}.{field}",
                        rule=f"required for an event on {topic}: {why}",
                        given=False,
                    )
                )
    defaults: dict[str, Any] = {
        "event_id": _PENDING_ID,
        "sequence": 0,
        "occurred_at": now,
        "correlation_id": "",
        "producer": producer,
        "producer_version": producer_version,
    }
    if entry.starts_task:
        defaults["task_id"] = str(new_id)
    envelope = _validated(Envelope, {**defaults, **given}, f"{name}.{_ENVELOPE}", problems)
    payload = _validated(entry.model, fields, name, problems)
    if isinstance(envelope, Envelope):
        problems.extend(_chain_problems(entry, envelope, topic))
    if not isinstance(envelope, Envelope) or not isinstance(payload, Payload) or problems:
        raise EventValidationError(entry.fullname, problems.found)
    # Derived from the validated task id and sequence, exactly as the platform derives them.
    envelope = envelope.model_copy(
        update={
            "event_id": (
                envelope.event_id
                if "event_id" in given
                else event_id_for(envelope.task_id, envelope.sequence)
            ),
            "correlation_id": envelope.correlation_id if "correlation_id" in given else envelope.task_id,
        }
    )
    record = {_ENVELOPE: envelope.model_dump(mode="python"), **payload.model_dump(mode="python")}
    problems.extend(_avro_problems(record, parsed_schema(entry.fullname), name))
    if problems:
        raise EventValidationError(entry.fullname, problems.found)
    try:
        return seal(envelope, payload)
    except (ValueError, TypeError, OverflowError) as exc:
        raise EventValidationError(
            entry.fullname, [FieldProblem(path=name, rule=f"cannot be Avro-encoded: {exc}", given=False)]
        ) from exc


def _chain_problems(entry: CatalogueEntry, envelope: Envelope, topic: str) -> list[FieldProblem]:
    """A submission starts its task's history; any later event is chained to the one before it."""
    path = f"{entry.name}.{_ENVELOPE}"
    if entry.starts_task:
        first = "a submission is the first event of its task"
        found = []
        if envelope.sequence != 0:
            found.append(
                FieldProblem(path=f"{path}.sequence", rule=f"must be 0: {first}", value=envelope.sequence)
            )
        if envelope.prev_hash is not None:
            found.append(
                FieldProblem(
                    path=f"{path}.prev_hash", rule=f"must be null: {first}", value=envelope.prev_hash
                )
            )
        return found
    if envelope.sequence > 0 and envelope.prev_hash is None:
        return [
            FieldProblem(
                path=f"{path}.prev_hash",
                rule=(
                    f"required for sequence > 0 on {topic}: the hex SHA-256 of the Avro body of the "
                    "task's previous event"
                ),
                given=False,
            )
        ]
    return []


def _request(
    entry: CatalogueEntry,
    data: Mapping[str, Any],
    now: datetime,
    new_id: uuid.UUID,
    producer: str,
    producer_version: str,
) -> tuple[TaskRequest, bytes]:
    """A request to a running task: its header gets an id, the time and the producer by default."""
    problems = _Problems()
    given = data.get("header", {})
    if not isinstance(given, Mapping):
        problems.add(FieldProblem(path=f"{entry.name}.header", rule="must be an object", value=given))
        given = {}
    header = {
        "request_id": new_id,
        "issued_at": now,
        "producer": producer,
        "producer_version": producer_version,
    }
    request = _validated(entry.model, {**data, "header": {**header, **given}}, entry.name, problems)
    if isinstance(request, TaskRequest):
        problems.extend(
            _avro_problems(request.model_dump(mode="python"), parsed_schema(entry.fullname), entry.name)
        )
    if not isinstance(request, TaskRequest) or problems:
        raise EventValidationError(entry.fullname, problems.found)
    body = encode_request(request)
    return decode_request(body, schema_json(entry.fullname)), body


def _dead_letter(
    entry: CatalogueEntry, data: Mapping[str, Any], now: datetime, new_id: uuid.UUID
) -> tuple[RecordDeadLettered, bytes]:
    problems = _Problems()
    defaults = {"dead_letter_id": new_id, "occurred_at": now}
    record = _validated(RecordDeadLettered, {**defaults, **data}, entry.name, problems)
    if isinstance(record, RecordDeadLettered):
        problems.extend(
            _avro_problems(record.model_dump(mode="python"), parsed_schema(entry.fullname), entry.name)
        )
    if not isinstance(record, RecordDeadLettered) or problems:
        raise EventValidationError(entry.fullname, problems.found)
    body = encode_dead_letter(record)
    # Read back: its model keeps microseconds that Avro's timestamp-millis does not, and the record
    # the caller gets must be the one on the log.
    return decode_dead_letter(body, schema_json(entry.fullname)), body


class _Problems:
    """Problems in the order found, one per field path (the first, most specific one wins)."""

    def __init__(self) -> None:
        self._by_path: dict[str, FieldProblem] = {}

    def add(self, problem: FieldProblem) -> None:
        self._by_path.setdefault(problem.path, problem)

    def extend(self, problems: Sequence[FieldProblem]) -> None:
        for problem in problems:
            self.add(problem)

    @property
    def found(self) -> list[FieldProblem]:
        return list(self._by_path.values())

    def __bool__(self) -> bool:
        return bool(self._by_path)


def _validated(
    model: type[BaseModel], values: Mapping[str, Any], path: str, problems: _Problems
) -> BaseModel | None:
    try:
        return model.model_validate(dict(values), extra="forbid")
    except ValidationError as exc:
        problems.extend([_pydantic_problem(model, path, error) for error in exc.errors()])
        return None


_PLAIN_SEGMENT = re.compile(r"[\w@:/+-]+")


def _segment(part: object) -> str:
    """A path segment as the problem line shows it: a field name as is, any other key quoted, so a
    key holding a newline, a dot or nothing at all cannot break or fake the line."""
    text = str(part)
    return text if _PLAIN_SEGMENT.fullmatch(text) else repr(part)


def _pydantic_problem(model: type[BaseModel], path: str, error: Any) -> FieldProblem:
    location = ".".join([path, *(_segment(part) for part in error["loc"])])
    kind = error["type"]
    if kind == "missing":
        return FieldProblem(path=location, rule="required", given=False)
    if kind == "extra_forbidden" and len(error["loc"]) == 1:
        known = [*model.model_fields, *([_ENVELOPE] if issubclass(model, Payload) else [])]
        rule = f"unknown field, not one of {', '.join(known)}"
        return FieldProblem(path=location, rule=rule, value=error["input"])
    return FieldProblem(path=location, rule=_rule(kind, error), value=error["input"])


_RULES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "bytes_type": "must be a string of bytes",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
    "uuid_type": "must be a UUID",
    "uuid_parsing": "must be a UUID",
    "datetime_type": "must be an ISO 8601 date-time with a time zone",
    "datetime_parsing": "must be an ISO 8601 date-time with a time zone",
    "datetime_from_date_parsing": "must be an ISO 8601 date-time with a time zone",
    "extra_forbidden": "unknown field",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _rule(kind: str, error: Any) -> str:
    context = error.get("ctx") or {}
    if kind in ("enum", "literal_error"):
        return "must be one of " + ", ".join(re.findall(r"'([^']*)'", str(context.get("expected", ""))))
    if kind in _BOUNDS:
        bound = next(iter(context.values()), "")
        return f"must be {_BOUNDS[kind]} {bound}"
    if kind in _RULES:
        return _RULES[kind]
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_AVRO_RANGES = {
    "int": "must fit an Avro int (-2147483648 .. 2147483647)",
    "long": "must fit an Avro long (64-bit signed)",
    "float": "must fit an Avro float",
}


def _avro_problems(record: Mapping[str, Any], schema: dict[str, Any], path: str) -> list[FieldProblem]:
    """What the Avro schema refuses in a record pydantic accepted (e.g. a number out of an int's range)."""
    named: dict[str, Any] = {}
    _collect_named(schema, named)
    found: list[FieldProblem] = []
    _walk(record, schema, path, named, found)
    return found


def _collect_named(schema: Any, named: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect_named(branch, named)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed") and "name" in schema:
            name, namespace = schema["name"], schema.get("namespace")
            named[name if "." in name or not namespace else f"{namespace}.{name}"] = schema
        for field in schema.get("fields", ()):
            _collect_named(field["type"], named)
        for nested in ("items", "values"):
            if nested in schema:
                _collect_named(schema[nested], named)
        if isinstance(schema.get("type"), dict | list):
            _collect_named(schema["type"], named)


def _walk(datum: Any, schema: Any, path: str, named: dict[str, Any], found: list[FieldProblem]) -> None:
    if isinstance(schema, str) and schema not in _PRIMITIVES:
        schema = named.get(schema, schema)
    if isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
        schema = schema["type"]
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if datum is None and len(branches) < len(schema):
            return
        if len(branches) == 1:
            _walk(datum, branches[0], path, named, found)
            return
        if not any(not _walk_quiet(datum, branch, path, named) for branch in branches):
            found.append(FieldProblem(path=path, rule="matches none of the field's Avro types", value=datum))
        return
    kind = schema.get("type") if isinstance(schema, dict) else schema
    if kind == "record" and isinstance(datum, Mapping):
        for field in schema["fields"]:
            _walk(datum.get(field["name"]), field["type"], f"{path}.{field['name']}", named, found)
    elif kind == "array" and isinstance(datum, list | tuple):
        for index, item in enumerate(datum):
            _walk(item, schema["items"], f"{path}.{index}", named, found)
    elif kind == "map" and isinstance(datum, Mapping):
        for key, value in datum.items():
            if isinstance(key, str) and not _utf8(key):
                found.append(FieldProblem(path=f"{path}.{_segment(key)}", rule=_NOT_UTF8, value=key))
            _walk(value, schema["values"], f"{path}.{_segment(key)}", named, found)
    elif kind == "string" and isinstance(datum, str) and not _utf8(datum):
        found.append(FieldProblem(path=path, rule=_NOT_UTF8, value=datum))
    elif not avro_valid(datum, schema, raise_errors=False):
        rule = _AVRO_RANGES.get(str(kind), f"is not a valid Avro {kind}")
        found.append(FieldProblem(path=path, rule=rule, value=datum))


_NOT_UTF8 = "must be valid Unicode text (a lone surrogate cannot be written as UTF-8)"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk_quiet(datum: Any, schema: Any, path: str, named: dict[str, Any]) -> list[FieldProblem]:
    found: list[FieldProblem] = []
    _walk(datum, schema, path, named, found)
    return found


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class ProducedRecord(BaseModel):
    """Where a produced record landed, acknowledged by every in-sync replica."""

    model_config = ConfigDict(frozen=True)

    event_type: str
    topic: str
    partition: int
    offset: int
    key: str
    event_id: uuid.UUID
    task_id: str | None
    schema_id: int


class _AcknowledgedProducer(EventProducer):
    """The platform's producer (its settings: acks=all, idempotent, no linger), one record at a time.

    ``EventProducer.publish`` waits for the acknowledgements but does not return where the records
    landed, which the SDK answers with; this adds only that.
    """

    async def send_acknowledged(
        self, topic: str, *, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> RecordMetadata:
        return await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)


class AgentlogProducer:
    """Produces agentlog events from another Python system; use as ``async with``.

    ``settings`` default to the environment's (``AGENTLOG_*``); ``bootstrap`` and ``registry_url``
    override the Kafka bootstrap servers and the schema registry. ``source`` is the CloudEvents
    ``ce_source`` of what it produces and the envelope's default ``producer``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap: str | None = None,
        registry_url: str | None = None,
        source: str = SDK_PRODUCER,
    ) -> None:
        overrides = {"kafka_bootstrap": bootstrap, "registry_url": registry_url}
        self.settings = (settings or get_settings()).model_copy(
            update={name: value for name, value in overrides.items() if value is not None}
        )
        self.source = source
        self._registry: RegistryClient | None = None
        self._codec: EventCodec | None = None
        self._kafka: _AcknowledgedProducer | None = None

    async def __aenter__(self) -> Self:
        registry = RegistryClient(self.settings.schema_registry_url)
        codec = EventCodec(registry)
        kafka = _AcknowledgedProducer(self.settings, codec, source=self.source)
        try:
            await kafka.start()
        except BaseException:
            await kafka.stop()
            await registry.close()
            raise
        self._registry, self._codec, self._kafka = registry, codec, kafka
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._kafka is not None:
                await self._kafka.stop()
        finally:
            if self._registry is not None:
                await self._registry.close()
            self._registry = self._codec = self._kafka = None

    def prepare(self, event_type: str, data: Any) -> PreparedRecord:
        """Validate and encode without producing (what :meth:`produce` sends)."""
        return prepare(
            event_type,
            data,
            settings=self.settings,
            now=datetime.now(UTC),
            new_id=uuid.uuid4(),
            producer=self.source,
        )

    async def produce(self, event_type: str, data: Any, *, traceparent: str | None = None) -> ProducedRecord:
        """Validate ``data`` as an ``event_type`` event, produce it and wait for Kafka's acknowledgement.

        ``traceparent`` continues the caller's W3C trace; a new one is started without it.
        Raises :class:`EventValidationError` (nothing is produced) or :class:`UnknownEventTypeError`.
        """
        return await self.send(self.prepare(event_type, data), traceparent=traceparent)

    async def send(self, prepared: PreparedRecord, *, traceparent: str | None = None) -> ProducedRecord:
        """Produce an already prepared record (registering its schema if needed); wait for the ack."""
        if self._codec is None or self._kafka is None:
            raise RuntimeError("AgentlogProducer is used outside `async with`")
        fullname = prepared.entry.fullname
        schema_id = await self._codec.schema_id(prepared.topic, fullname)
        metadata = await self._kafka.send_acknowledged(
            prepared.topic,
            key=prepared.key,
            value=await self._codec.encode_body(prepared.topic, fullname, prepared.body),
            headers=prepared.headers(source=self.source, traceparent=traceparent),
        )
        return ProducedRecord(
            event_type=fullname,
            topic=metadata.topic,
            partition=metadata.partition,
            offset=metadata.offset,
            key=prepared.key.decode(),
            event_id=prepared.record_id,
            task_id=prepared.task_id,
            schema_id=schema_id,
        )

    async def submit_task(
        self,
        *,
        query: str,
        org_id: str,
        user_id: str,
        context: Mapping[str, str] | None = None,
        priority: Priority | str = Priority.NORMAL,
        session_id: str | None = None,
        idempotency_key: str | None = None,
        task_id: str | None = None,
        traceparent: str | None = None,
    ) -> ProducedRecord:
        """Submit a task (a ``TaskSubmitted`` on the requests topic); a new task id unless given."""
        envelope: dict[str, Any] = {"org_id": org_id, "user_id": user_id}
        if task_id is not None:
            envelope["task_id"] = task_id
        data = {
            "query": query,
            "context": dict(context or {}),
            "priority": priority,
            "session_id": session_id,
            "idempotency_key": idempotency_key,
            _ENVELOPE: envelope,
        }
        return await self.produce(TaskSubmitted.fullname(), data, traceparent=traceparent)


async def produce_one(
    event_type: str, data: Any, *, settings: Settings | None = None, traceparent: str | None = None
) -> ProducedRecord:
    """Produce one event with a producer opened and closed around it (the CLI's ``produce``)."""
    async with AgentlogProducer(settings) as producer:
        return await producer.produce(event_type, data, traceparent=traceparent)


def preview(event_type: str, data: Any, *, settings: Settings | None = None) -> dict[str, Any]:
    """What :func:`produce_one` would send, as JSON-ready data; touches neither Kafka nor the registry."""
    settings = settings or get_settings()
    prepared = prepare(event_type, data, settings=settings, now=datetime.now(UTC), new_id=uuid.uuid4())
    return prepared.describe(settings, prepared.headers(source=SDK_PRODUCER))
