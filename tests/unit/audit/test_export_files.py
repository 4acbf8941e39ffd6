"""Export files (Avro object container, JSON lines) give back every event byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import fastavro
import pytest

from audit.export import ExportedEvent, ExportFileError, ExportFormat, ExportWriter, read_export
from audit.import_ import plan_import
from schemas.serde import schema_json
from tests.unit.audit.chains import history


def _exported() -> list[ExportedEvent]:
    return [
        ExportedEvent(
            suffix="tasks.requests" if event.sequence == 0 else "tasks.events",
            partition=1,
            offset=i,
            timestamp_ms=1_700_000_000_000 + i,
            headers={"ce_id": str(event.envelope.event_id)},
            writer_schema=schema_json(event.payload.fullname()),
            body=body,
            event=event,
        )
        for i, (event, body) in enumerate(history())
    ]


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_round_trip(tmp_path: Path, fmt: ExportFormat) -> None:
    path = tmp_path / f"t.{fmt.value}"
    with path.open("wb") as out:
        writer = ExportWriter(out, fmt, {"task_id": "t-1"})
        for item in _exported():
            writer.write(item)
        writer.flush()
    assert list(read_export(path)) == _exported()


def test_the_avro_file_is_readable_without_agentlog(tmp_path: Path) -> None:
    path = tmp_path / "t.avro"
    with path.open("wb") as out:
        writer = ExportWriter(out, ExportFormat.avro, {})
        for item in _exported():
            writer.write(item)
        writer.flush()
    with path.open("rb") as source:
        records = list(fastavro.reader(source))
    assert [r["sequence"] for r in records] == list(range(6))  # type: ignore[index]
    assert records[0]["event"]["query"] == "question "  # type: ignore[index]


def test_an_edited_jsonl_body_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with path.open("wb") as out:
        writer = ExportWriter(out, ExportFormat.jsonl, {})
        for item in _exported():
            writer.write(item)
    lines = path.read_text().splitlines()
    event_line = json.loads(lines[-1])
    event_line["digest"] = "00" * 32
    path.write_text("\n".join([*lines[:-1], json.dumps(event_line)]) + "\n")
    with pytest.raises(ExportFileError, match="hashes to"):
        list(read_export(path))


def test_import_skips_what_is_there_and_refuses_conflicts() -> None:
    items = _exported()
    existing = {(i.task_id, i.sequence): i.event.digest for i in items[:2]}
    plan = plan_import(items, existing)
    assert [i.sequence for i in plan.to_produce] == [2, 3, 4, 5] and plan.skipped == 2
    assert not plan.conflicts
    conflicting = plan_import(items, {("t-1", 1): "ff" * 32})
    assert len(conflicting.conflicts) == 1
