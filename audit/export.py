"""Export files of task events, and reading them back (what ``agentlog import`` loads).

One record per event, in log order, each with everything needed to put the event back on a log
exactly as it was: the Avro ``body`` (whose SHA-256 is the event's ``digest``, the link the next
event's ``prev_hash`` holds), the ``writer_schema`` it was written with, its topic (by catalogue
suffix), Kafka timestamp and headers; plus the decoded event, for whoever reads the file without
agentlog. Two formats:

- ``avro``: an Avro object container file (deflate) of ``agentlog.export.ExportedEvent`` records;
  the file's schema embeds every event record as a union branch of ``event`` (one file for all
  event types: a task's timeline stays in one ordered stream), and each record carries the writer
  schema of its body.
- ``jsonl``: one JSON object a line: a ``header`` line, a ``schema`` line before the first event
  written with each schema (``schema_id`` is the SHA-256 of its text), then ``event`` lines
  (``body`` in base64, ``event`` as JSON).

An export is written to ``<file>.partial`` and renamed when complete, so an interrupted export
never leaves a file that looks whole.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import IO, Any

import fastavro
from fastavro.write import Writer

from audit.log import LogRecord
from schemas.events import PAYLOAD_TYPES, Event
from schemas.serde import decode_event, parsed_schema

FORMAT_NAME = "agentlog-export"
FORMAT_VERSION = 1


class ExportFormat(StrEnum):
    avro = "avro"
    jsonl = "jsonl"


class ExportFileError(ValueError):
    """The file is not an agentlog export, or a record in it is damaged (named with its line/index)."""


@dataclass(frozen=True)
class ExportedEvent:
    """One event of an export: enough to produce it again, byte for byte."""

    suffix: str
    partition: int
    offset: int
    timestamp_ms: int
    headers: dict[str, str]
    writer_schema: str
    body: bytes
    event: Event

    @classmethod
    def of(cls, record: LogRecord) -> ExportedEvent:
        return cls(
            suffix=record.suffix,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
            headers=record.headers,
            writer_schema=record.writer_schema,
            body=record.body,
            event=record.event,
        )

    @property
    def task_id(self) -> str:
        return self.event.task_id

    @property
    def sequence(self) -> int:
        return self.event.sequence


def _without_redefinitions(node: Any, defined: set[str]) -> Any:
    """``node`` with every named type defined earlier replaced by its name (Avro allows one
    definition per name in a schema; each event record's parsed schema defines Envelope again)."""
    if isinstance(node, list):
        return [_without_redefinitions(n, defined) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") in ("record", "enum", "fixed") and "name" in node:
        name = node["name"]
        if name in defined:
            return name
        defined.add(name)
    return {key: _without_redefinitions(value, defined) for key, value in node.items()}


@cache
def export_schema() -> dict[str, Any]:
    """The schema of the Avro export file's records."""
    defined: set[str] = set()
    branches = [_without_redefinitions(copy.deepcopy(parsed_schema(name)), defined) for name in PAYLOAD_TYPES]
    string, long_ = "string", "long"
    return {
        "type": "record",
        "name": "agentlog.export.ExportedEvent",
        "doc": "One task event of an agentlog export, with the exact bytes it had on the log.",
        "fields": [
            {
                "name": "topic",
                "type": string,
                "doc": "Catalogue suffix of its topic (tasks.requests|tasks.events).",
            },
            {"name": "partition", "type": "int", "doc": "Partition it was read from."},
            {"name": "offset", "type": long_, "doc": "Offset it was read from."},
            {
                "name": "timestamp_ms",
                "type": long_,
                "doc": "The Kafka record's timestamp (ms since the epoch).",
            },
            {"name": "headers", "type": {"type": "map", "values": string}, "doc": "The record's headers."},
            {"name": "task_id", "type": string, "doc": "The event's task."},
            {"name": "org_id", "type": string, "doc": "The task's org."},
            {"name": "sequence", "type": long_, "doc": "The event's sequence in its task."},
            {"name": "event_type", "type": string, "doc": "The event record's full name."},
            {"name": "event_id", "type": string, "doc": "The event's id."},
            {
                "name": "digest",
                "type": string,
                "doc": "Hex SHA-256 of body: the event's link in its task's chain.",
            },
            {"name": "writer_schema", "type": string, "doc": "The Avro schema body was written with."},
            {"name": "body", "type": "bytes", "doc": "The Avro body as it was on the log."},
            {"name": "event", "type": branches, "doc": "The event, decoded (this version's schema)."},
        ],
    }


@cache
def _parsed_export_schema() -> Any:
    return fastavro.parse_schema(export_schema())


def _event_record(event: Event) -> dict[str, Any]:
    record = event.payload.model_dump(mode="python")
    record["envelope"] = event.envelope.model_dump(mode="python")
    return record


def _header(scope: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "exported_at": datetime.now(UTC).isoformat(),
        "scope": scope,
    }


class ExportWriter:
    """Writes exported events to an open binary file in one format."""

    def __init__(self, out: IO[bytes], fmt: ExportFormat, scope: dict[str, Any]) -> None:
        self._out, self._fmt = out, fmt
        self._schemas: set[str] = set()
        self.events = 0
        self._avro: Writer | None = None
        if fmt is ExportFormat.avro:
            metadata = {"agentlog.export": json.dumps(_header(scope))}
            self._avro = Writer(out, _parsed_export_schema(), codec="deflate", metadata=metadata)
        else:
            self._line(_header(scope) | {"kind": "header"})

    def _line(self, value: dict[str, Any]) -> None:
        self._out.write(json.dumps(value, separators=(",", ":"), default=str).encode() + b"\n")

    def write(self, exported: ExportedEvent) -> None:
        event = exported.event
        common = {
            "topic": exported.suffix,
            "partition": exported.partition,
            "offset": exported.offset,
            "timestamp_ms": exported.timestamp_ms,
            "headers": exported.headers,
            "task_id": event.task_id,
            "org_id": event.envelope.org_id,
            "sequence": event.sequence,
            "event_type": event.payload.fullname(),
            "event_id": str(event.envelope.event_id),
            "digest": event.digest,
        }
        if self._avro is not None:
            self._avro.write(
                common
                | {
                    "writer_schema": exported.writer_schema,
                    "body": exported.body,
                    "event": (event.payload.fullname(), _event_record(event)),
                }
            )
        else:
            schema_id = hashlib.sha256(exported.writer_schema.encode()).hexdigest()
            if schema_id not in self._schemas:
                self._schemas.add(schema_id)
                self._line({"kind": "schema", "schema_id": schema_id, "schema": exported.writer_schema})
            self._line(
                {"kind": "event"}
                | common
                | {
                    "writer_schema": schema_id,
                    "body": base64.b64encode(exported.body).decode(),
                    "event": {"envelope": event.envelope.model_dump(mode="json")}
                    | event.payload.model_dump(mode="json"),
                }
            )
        self.events += 1

    def flush(self) -> None:
        if self._avro is not None:
            self._avro.flush()
        self._out.flush()


async def export_to_file(
    records: AsyncIterator[LogRecord], path: Path, fmt: ExportFormat, scope: dict[str, Any]
) -> int:
    """Write ``records`` to ``path`` (through ``<path>.partial``, renamed when complete); how many.

    Interrupted (Ctrl-C, an error), the partial file is removed: no file at ``path`` is incomplete.
    """
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as out:
            writer = ExportWriter(out, fmt, scope)
            async for record in records:
                writer.write(ExportedEvent.of(record))
            writer.flush()
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return writer.events


def read_export(path: Path) -> Iterator[ExportedEvent]:
    """The events of an export file (either format, told by its first bytes), in file order.

    Each event is rebuilt from its body and writer schema and compared with the record's digest, so a
    damaged or edited file is an :class:`ExportFileError`, not an import of something else.
    """
    with path.open("rb") as source:
        magic = source.read(4)
    if magic == b"Obj\x01":
        yield from _read_avro(path)
    else:
        yield from _read_jsonl(path)


def _read_avro(path: Path) -> Iterator[ExportedEvent]:
    with path.open("rb") as source:
        reader = fastavro.reader(source)
        if "agentlog.export" not in reader.metadata:
            raise ExportFileError(f"{path}: an Avro file, but not an agentlog export")
        for index, record in enumerate(reader):
            rec: dict[str, Any] = record  # type: ignore[assignment]
            body = rec["body"]
            exported = ExportedEvent(
                suffix=rec["topic"],
                partition=rec["partition"],
                offset=rec["offset"],
                timestamp_ms=rec["timestamp_ms"],
                headers=rec["headers"],
                writer_schema=rec["writer_schema"],
                body=body,
                event=Event.model_construct(digest=rec["digest"]),
            )
            yield _checked_digest(exported, f"{path} record {index}")


def _checked_digest(exported: ExportedEvent, where: str) -> ExportedEvent:
    try:
        event = decode_event(exported.body, exported.writer_schema)
    except ValueError as exc:
        raise ExportFileError(f"{where}: the body does not decode with its writer schema: {exc}") from exc
    if event.digest != exported.event.digest:
        raise ExportFileError(
            f"{where}: the body hashes to {event.digest}, the record says {exported.event.digest}"
        )
    return ExportedEvent(**{**exported.__dict__, "event": event})


def _read_jsonl(path: Path) -> Iterator[ExportedEvent]:
    schemas: dict[str, str] = {}
    with path.open("rb") as source:
        for number, raw in enumerate(source, start=1):
            where = f"{path} line {number}"
            try:
                line = json.loads(raw)
            except ValueError as exc:
                raise ExportFileError(f"{where}: not JSON: {exc}") from exc
            kind = line.get("kind") if isinstance(line, dict) else None
            if number == 1 and (kind != "header" or line.get("format") != FORMAT_NAME):
                raise ExportFileError(f"{where}: not an agentlog export (no header line)")
            if kind == "schema":
                schemas[line["schema_id"]] = line["schema"]
            elif kind == "event":
                try:
                    writer = schemas[line["writer_schema"]]
                    body = base64.b64decode(line["body"], validate=True)
                    exported = ExportedEvent(
                        suffix=line["topic"],
                        partition=line["partition"],
                        offset=line["offset"],
                        timestamp_ms=line["timestamp_ms"],
                        headers=line["headers"],
                        writer_schema=writer,
                        body=body,
                        event=Event.model_construct(digest=line["digest"]),
                    )
                except (KeyError, ValueError) as exc:
                    raise ExportFileError(
                        f"{where}: damaged event line ({type(exc).__name__}: {exc})"
                    ) from exc
                yield _checked_digest(exported, where)
