"""Avro serde for agentlog events and the Confluent wire format.

Wire format (Confluent): byte 0 = magic 0, bytes 1-4 = big-endian schema id from the registry,
then the Avro binary body (schemaless encoding). The SHA-256 of the body is the event's digest,
which the next event of the task carries as ``prev_hash``.

Two paths, one result. The *reference* path is pydantic ``model_dump`` + fastavro to write, and
fastavro (with schema resolution) + pydantic validation to read. For the schemas this version owns,
``schemas.avro_codegen`` compiles each record to a writer and a reader bound to the models, 2-3x
faster; they either return exactly what the reference returns or raise, and on any exception the
reference path runs, so its errors (and what it accepts) stay the contract. A body written with
another schema (an older version, a foreign producer) always takes the reference path.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import load_schema
from pydantic import BaseModel, ValidationError

from schemas.avro_codegen import (
    UnsupportedBinding,
    compile_reader,
    compile_writer,
    constructor,
    keeps_instances,
)
from schemas.events import PAYLOAD_TYPES, AuditSealed, Envelope, Event, Payload, RecordDeadLettered
from schemas.requests import REQUEST_TYPES, TaskRequest

AVRO_DIR = Path(__file__).parent / "avro"
MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")


class RecordDecodeError(ValueError):
    """Bytes that do not decode to a valid agentlog record; the message names the record and why.

    Every way decoding hostile or corrupt bytes can fail ends as this error (the underlying one is
    its ``__cause__``), so a reader can tell a bad record, which it parks or reports, from a
    failure of its own (the registry unreachable), which it must not mistake for one.
    """


class WireFormatError(RecordDecodeError):
    """The bytes are not a Confluent-framed Avro record."""


class UnknownRecordError(RecordDecodeError):
    """The writer schema names a record this version of agentlog does not know."""


def _validation_summary(exc: ValidationError, limit: int = 3) -> str:
    problems = [
        f"{'.'.join([exc.title, *(str(part) for part in error['loc'])])}: "
        f"{' '.join(str(error['msg']).split())} (got {_shown(error.get('input'))})"
        for error in exc.errors()[:limit]
    ]
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


@contextmanager
def _decoding(fullname: str, body: bytes) -> Iterator[None]:
    """Turns whatever reading ``body`` as ``fullname`` raises into a :class:`RecordDecodeError`.

    fastavro reports a malformed body as EOFError, IndexError, OverflowError, UnicodeDecodeError,
    its own SchemaResolutionError and more, and the models as ValidationError: callers facing
    untrusted bytes cannot list them all, so any failure here is the record's.
    """
    try:
        yield
    except RecordDecodeError:
        raise
    except ValidationError as exc:
        raise RecordDecodeError(
            f"{fullname} body of {len(body)} bytes holds values its model refuses: {_validation_summary(exc)}"
        ) from exc
    except Exception as exc:
        raise RecordDecodeError(
            f"{fullname} body of {len(body)} bytes does not decode: {type(exc).__name__}: {_detail(exc)}"
        ) from exc


def _detail(exc: BaseException, limit: int = 300) -> str:
    """The error's message on one line, capped (fastavro's can quote whole schemas)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


@cache
def parsed_schema(fullname: str) -> dict[str, Any]:
    """The parsed (named types expanded) schema of ``fullname`` from ``schemas/avro``."""
    path = AVRO_DIR / f"{fullname}.avsc"
    if not path.exists():
        raise UnknownRecordError(f"no schema file for record {fullname!r} in {AVRO_DIR}")
    return cast(dict[str, Any], load_schema(str(path), _write_hint=False))


@cache
def schema_json(fullname: str) -> str:
    """The self-contained JSON text of a record's schema, as registered in the schema registry."""
    return json.dumps(parsed_schema(fullname), separators=(",", ":"))


@cache
def _fastavro_schema(fullname: str) -> Any:
    """Our schema of ``fullname`` parsed once by fastavro (an unparsed dict is re-parsed per call)."""
    return fastavro.parse_schema(parsed_schema(fullname))


@cache
def _parsed_writer(schema_text: str) -> Any:
    return fastavro.parse_schema(json.loads(schema_text))


def record_fullnames() -> list[str]:
    """Every top-level record agentlog defines: the events, the dead-letter record, the audit seal and
    the requests to running tasks (envelope and headers are nested types, not records of their own)."""
    return [*PAYLOAD_TYPES, RecordDeadLettered.fullname(), AuditSealed.fullname(), *REQUEST_TYPES]


def encode_payload(envelope: Envelope, payload: Payload) -> bytes:
    """The Avro body of ``payload`` under ``envelope`` (schemaless, local schema)."""
    write = _compiled_writer(type(payload))
    if write is not None:
        try:
            return write(payload, envelope)
        except Exception:
            pass  # the reference path below raises its own error, or writes what it accepts
    record = payload.model_dump(mode="python")
    record["envelope"] = envelope.model_dump(mode="python")
    return _write(payload.fullname(), record)


def encode_event(event: Event) -> bytes:
    """The Avro body of an event, with the local schema of its record."""
    return encode_payload(event.envelope, event.payload)


def encode_dead_letter(record: RecordDeadLettered) -> bytes:
    write = _compiled_writer(RecordDeadLettered)
    if write is not None:
        try:
            return write(record)
        except Exception:
            pass  # as in encode_payload
    return _write(record.fullname(), record.model_dump(mode="python"))


def _write(fullname: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _fastavro_schema(fullname), record)
    return buf.getvalue()


def _fullname(model: type[BaseModel]) -> str:
    fullname: Callable[[], str] = getattr(model, "fullname")  # noqa: B009 -- Payload and dead letters
    return fullname()


def _detached(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Top-level record fields that are not the model's: an event record nests its envelope."""
    return {"envelope": Envelope} if issubclass(model, Payload) else {}


@cache
def binding_problem(model: type[BaseModel]) -> str | None:
    """Why ``model``'s record has no compiled writer and reader (None: it has both)."""
    try:
        _compile(model)
    except UnsupportedBinding as exc:
        return str(exc)
    return None


@cache
def _compile(model: type[BaseModel]) -> tuple[Callable[..., bytes], Callable[[bytes], Any]]:
    schema, detached = parsed_schema(_fullname(model)), _detached(model)
    return compile_writer(schema, model, detached), compile_reader(schema, model, detached)


def _compiled_writer(model: type[BaseModel]) -> Callable[..., bytes] | None:
    return None if binding_problem(model) else _compile(model)[0]


def _compiled_reader(model: type[BaseModel]) -> Callable[[bytes], Any] | None:
    return None if binding_problem(model) else _compile(model)[1]


_sha256 = hashlib.sha256


def digest(body: bytes) -> str:
    """Hex SHA-256 of an Avro body: the link of the per-task hash chain."""
    return _sha256(body).hexdigest()


@cache
def _event_maker(payload_type: type[Payload]) -> Callable[[Envelope, Payload, str], Event] | None:
    """Builds ``Event(envelope=..., payload=..., digest=...)`` without validating it again, when
    validation would keep the two validated models as they are (None: it would not)."""
    if not (keeps_instances(Envelope) and keeps_instances(Payload) and keeps_instances(payload_type)):
        return None
    try:
        return constructor(Event)
    except UnsupportedBinding:
        return None


def _event(envelope: Envelope, payload: Payload, body_digest: str) -> Event:
    # Validating the Event only checks that two validated models are models (~1.9 us).
    make = _event_maker(type(payload))
    if make is not None and isinstance(envelope, Envelope):
        return make(envelope, payload, body_digest)
    return Event(envelope=envelope, payload=payload, digest=body_digest)


def seal(envelope: Envelope, payload: Payload) -> tuple[Event, bytes]:
    """Encode ``payload`` under ``envelope``; returns the event (with its digest) and its Avro body."""
    body = encode_payload(envelope, payload)
    return _event(envelope, payload, digest(body)), body


@cache
def writer_fullname(writer_schema_text: str) -> str:
    try:
        schema = json.loads(writer_schema_text)
    except ValueError as exc:
        raise RecordDecodeError(f"writer schema is not JSON: {exc}") from exc
    # A registry shared with other producers may hand back any schema for an id: a primitive, an
    # array, a union; none of them is a record of ours.
    name = schema.get("name") if isinstance(schema, dict) else None
    if not isinstance(name, str) or not name:
        raise UnknownRecordError(f"writer schema {_shown(writer_schema_text)} is not a named record")
    namespace = schema.get("namespace")
    return name if "." in name or not isinstance(namespace, str) or not namespace else f"{namespace}.{name}"


def decode_event(body: bytes, writer_schema_text: str) -> Event:
    """Decode an Avro body written with ``writer_schema_text`` into the local model (schema resolution)."""
    return event_reader(writer_schema_text)(body)


@cache
def event_reader(writer_schema_text: str) -> Callable[[bytes], Event]:
    """The decoder of task-event bodies written with ``writer_schema_text`` (built once per schema)."""
    fullname = writer_fullname(writer_schema_text)
    payload_type = PAYLOAD_TYPES.get(fullname)
    if payload_type is None:
        raise UnknownRecordError(f"record {fullname!r} is not a task event known to this agentlog version")

    def reference(body: bytes) -> Event:
        with _decoding(fullname, body):
            record = _read(body, writer_schema_text, fullname)
            envelope_fields = record.pop("envelope")
            return Event(
                envelope=Envelope.model_validate(envelope_fields),
                payload=payload_type.model_validate(record),
                digest=digest(body),
            )

    try:
        resolved = _reader_schema(writer_schema_text, fullname)
        _parsed_writer(writer_schema_text)
    except Exception as exc:
        # A writer schema fastavro cannot parse fails every body alike: say so once, here.
        raise RecordDecodeError(
            f"writer schema of {fullname} is not usable: {type(exc).__name__}: {_detail(exc)}"
        ) from exc
    compiled, make = _compiled_reader(payload_type), _event_maker(payload_type)
    if compiled is None or make is None or resolved is not None:
        return reference

    def read(body: bytes) -> Event:
        try:
            payload, envelope = compiled(body)
        except Exception:
            # Malformed, or outside what the compiled reader takes: the reference decides.
            return reference(body)
        return make(envelope, payload, _sha256(body).hexdigest())

    return read


def decode_dead_letter(body: bytes, writer_schema_text: str) -> RecordDeadLettered:
    fullname = RecordDeadLettered.fullname()
    if (written := writer_fullname(writer_schema_text)) != fullname:
        raise UnknownRecordError(f"record {written!r} is not a dead letter ({fullname})")
    compiled = _compiled_reader(RecordDeadLettered)
    if compiled is not None and _reader_schema(writer_schema_text, fullname) is None:
        try:
            return cast(RecordDeadLettered, compiled(body))
        except Exception:
            pass  # the reference path below raises the error that counts, or reads what it accepts
    with _decoding(fullname, body):
        return RecordDeadLettered.model_validate(_read(body, writer_schema_text, fullname))


def encode_request(request: TaskRequest) -> bytes:
    """The Avro body of a request to a running task (local schema)."""
    return _write(request.fullname(), request.model_dump(mode="python"))


def decode_request(body: bytes, writer_schema_text: str) -> TaskRequest:
    """Decode a request written with ``writer_schema_text`` into its local model."""
    fullname = writer_fullname(writer_schema_text)
    request_type = REQUEST_TYPES.get(fullname)
    if request_type is None:
        raise UnknownRecordError(f"record {fullname!r} is not a task request known to this agentlog version")
    with _decoding(fullname, body):
        return request_type.model_validate(_read(body, writer_schema_text, fullname))


def is_request(writer_schema_text: str) -> bool:
    return writer_fullname(writer_schema_text) in REQUEST_TYPES


def _read(body: bytes, writer_schema_text: str, reader_fullname: str) -> dict[str, Any]:
    """Decode with the writer's schema, resolved to our local (reader) schema of the record."""
    reader = io.BytesIO(body)
    record = fastavro.schemaless_reader(
        reader, _parsed_writer(writer_schema_text), _reader_schema(writer_schema_text, reader_fullname)
    )
    if reader.tell() != len(body):
        # A body with trailing bytes was not written with this schema, whatever decoded before them.
        raise RecordDecodeError(f"{len(body) - reader.tell()} bytes left after decoding {reader_fullname}")
    return cast(dict[str, Any], record)


@cache
def _reader_schema(writer_schema_text: str, reader_fullname: str) -> dict[str, Any] | None:
    """None when the writer's schema is our own: fastavro then skips schema resolution (3x faster)."""
    # Compared as parsed JSON: the registry stores a normalized text (sorted keys) of our schema.
    if json.loads(writer_schema_text) == parsed_schema(reader_fullname):
        return None
    return cast(dict[str, Any], _fastavro_schema(reader_fullname))


def frame(schema_id: int, body: bytes) -> bytes:
    """Confluent wire format: magic byte, schema id, Avro body."""
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


def unframe(data: bytes | None) -> tuple[int, bytes]:
    """Split Confluent-framed bytes into (schema id, Avro body)."""
    if data is None:
        raise WireFormatError("record has no value (tombstone) where an event was expected")
    if len(data) < _HEADER.size:
        raise WireFormatError(f"record of {len(data)} bytes is shorter than the 5-byte Confluent header")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise WireFormatError(
            f"unknown magic byte {magic} (expected {MAGIC_BYTE}): not Confluent wire format"
        )
    return schema_id, data[_HEADER.size :]
