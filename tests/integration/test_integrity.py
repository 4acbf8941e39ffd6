"""Tamper evidence and export/import on the real stack: a real task verifies clean; tampered copies
of it (edited, deleted, swapped) are caught at the right sequence; a consistent rewrite is caught by
the sealed day root; export -> import into another deployment -> the same timeline."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from api.timeline import timeline_rows
from audit.export import ExportedEvent, ExportFormat, export_to_file, read_export
from audit.import_ import import_events
from audit.log import ReadStats, read_events
from audit.seal import SealWriter, seal_day
from audit.verify_log import verify_log
from schemas.codec import EventCodec
from schemas.registry.client import RegistryClient
from schemas.serde import seal
from streams.history import read_task_events
from streams.settings import Settings
from tests.integration.conftest import api, submit_and_wait

_T = TypeVar("_T")


def _run(settings: Settings, work: Callable[[EventCodec], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        registry = RegistryClient(settings.schema_registry_url)
        try:
            return await work(EventCodec(registry))
        finally:
            await registry.close()

    return asyncio.run(main())


def _elsewhere(settings: Settings) -> Settings:
    """Another deployment: its own topics (same Kafka and registry)."""
    return settings.model_copy(update={"topic_prefix": f"integrity-{uuid.uuid4().hex[:8]}"})


@pytest.fixture(scope="module")
def task(platform: Settings) -> dict[str, Any]:
    view = submit_and_wait(platform, {"query": "What is (17 + 25) * 3?"}, org="integrity-org")
    assert view["status"] == "completed", view
    return view


@pytest.fixture(scope="module")
def exported(platform: Settings, task: dict[str, Any]) -> list[ExportedEvent]:
    async def read(codec: EventCodec) -> list[ExportedEvent]:
        return [
            ExportedEvent.of(r)
            async for r in read_events(platform, codec, task_id=task["task_id"], stats=ReadStats())
        ]

    events = _run(platform, read)
    assert len(events) >= 5
    return events


def _verify(settings: Settings, task_id: str | None) -> Any:
    return _run(settings, lambda codec: verify_log(settings, codec, task_id=task_id))


def test_a_real_task_verifies_clean_on_the_cli_path_and_over_rest(
    platform: Settings, task: dict[str, Any]
) -> None:
    report = _verify(platform, task["task_id"])
    assert report.ok, report
    assert report.tasks[0].events == task["last_sequence"] + 1
    with api(platform, org="integrity-org", role="viewer") as client:
        reply = client.get(f"/v1/tasks/{task['task_id']}/verify")
        assert reply.status_code == 200, reply.text
        assert reply.json()["ok"] is True
    with api(platform, org="another-org", role="viewer") as client:
        assert client.get(f"/v1/tasks/{task['task_id']}/verify").status_code == 404


def _edit_middle(items: list[ExportedEvent], index: int) -> list[ExportedEvent]:
    """The event at ``index`` re-encoded with one field changed, its envelope left alone."""
    item = items[index]
    fields = type(item.event.payload).model_fields
    name = next(n for n in ("outcome", "detail", "messages_json", "result", "query") if n in fields)
    payload = item.event.payload.model_copy(update={name: getattr(item.event.payload, name) + " (edited)"})
    event, body = seal(item.event.envelope, payload)
    return [
        *items[:index],
        ExportedEvent(**{**item.__dict__, "event": event, "body": body}),
        *items[index + 1 :],
    ]


def _pick_editable(items: list[ExportedEvent]) -> int:
    for index, item in enumerate(items[1:-1], start=1):
        if any(n in type(item.event.payload).model_fields for n in ("outcome", "messages_json", "result")):
            return index
    raise AssertionError("no editable middle event")


def test_tampered_copies_are_caught_at_the_right_sequence(
    platform: Settings, task: dict[str, Any], exported: list[ExportedEvent]
) -> None:
    task_id = task["task_id"]
    edit_at = _pick_editable(exported)
    cases = {
        "edited": (_edit_middle(exported, edit_at), edit_at),
        "missing": ([*exported[:3], *exported[4:]], 3),
        "out-of-order": ([*exported[:2], exported[3], exported[2], *exported[4:]], 2),
    }
    for kind, (items, sequence) in cases.items():
        target = _elsewhere(platform)
        # Tampered copies are produced as an import would (the chain check is verify's, not import's).
        _run(target, lambda codec, items=items, target=target: import_events(target, codec, items))
        report = _verify(target, task_id)
        verdict = report.tasks[0]
        assert not verdict.ok, kind
        assert verdict.first_break is not None
        assert (verdict.first_break.kind, verdict.first_break.sequence) == (kind, sequence), verdict


def test_a_consistent_rewrite_is_caught_by_the_sealed_root(
    platform: Settings, task: dict[str, Any], exported: list[ExportedEvent]
) -> None:
    original = _elsewhere(platform)
    _run(original, lambda codec: import_events(original, codec, exported))
    day = exported[0].event.envelope.occurred_at.date()
    result = _run(original, lambda codec: seal_day(original, codec, day, sealed_by="test"))
    [sealed] = result.written
    assert sealed.org_id == "integrity-org" and sealed.events == len(exported)
    again = _run(original, lambda codec: seal_day(original, codec, day, sealed_by="test"))
    assert not again.written and len(again.unchanged) == 1
    assert _verify(original, None).ok

    # The rewrite: one event edited and every later event re-chained, so each chain is intact ...
    edit_at = _pick_editable(exported)
    items = _edit_middle(exported, edit_at)
    for index in range(edit_at + 1, len(items)):
        item = items[index]
        envelope = item.event.envelope.model_copy(update={"prev_hash": items[index - 1].event.digest})
        event, body = seal(envelope, item.event.payload)
        items[index] = ExportedEvent(**{**item.__dict__, "event": event, "body": body})
    rewritten = _elsewhere(platform)
    _run(rewritten, lambda codec: import_events(rewritten, codec, items))

    async def copy_seal(codec: EventCodec) -> None:
        async with SealWriter(rewritten, codec, source="test") as writer:
            await writer.write(sealed)

    _run(rewritten, copy_seal)
    report = _verify(rewritten, None)
    assert all(t.ok for t in report.tasks)
    # ... but the day's root is not the sealed one.
    [seal_verdict] = report.seals
    assert not seal_verdict.ok and not report.ok
    assert seal_verdict.sealed_root == sealed.root and seal_verdict.found_events == sealed.events


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_export_import_replay_gives_the_same_timeline(
    platform: Settings, task: dict[str, Any], tmp_path: Path, fmt: ExportFormat
) -> None:
    task_id = task["task_id"]
    path = tmp_path / f"{task_id}.{fmt.value}"

    async def export(codec: EventCodec) -> int:
        records = read_events(platform, codec, task_id=task_id, stats=ReadStats())
        return await export_to_file(records, path, fmt, {"task_id": task_id})

    count = _run(platform, export)
    assert count == task["last_sequence"] + 1 and path.exists()
    target = _elsewhere(platform)
    result = _run(target, lambda codec: import_events(target, codec, read_export(path)))
    assert result.produced == count
    again = _run(target, lambda codec: import_events(target, codec, read_export(path)))
    assert again.produced == 0 and again.skipped == count  # idempotent

    def timeline(settings: Settings) -> list[dict[str, Any]]:
        return _run(settings, lambda codec: _rows(settings, codec, task_id))

    assert timeline(target) == timeline(platform)
    assert _verify(target, task_id).ok


async def _rows(settings: Settings, codec: EventCodec, task_id: str) -> list[dict[str, Any]]:
    return timeline_rows(await read_task_events(settings, codec, task_id))


def test_rest_export_downloads_an_importable_file(
    platform: Settings, task: dict[str, Any], tmp_path: Path
) -> None:
    task_id = task["task_id"]
    for fmt in ("jsonl", "avro"):
        with api(platform, org="integrity-org", role="viewer") as client:
            reply = client.get(f"/v1/tasks/{task_id}/export", params={"format": fmt})
        assert reply.status_code == 200, reply.text
        path = tmp_path / f"rest.{fmt}"
        path.write_bytes(reply.content)
        events = list(read_export(path))
        assert [e.sequence for e in events] == list(range(task["last_sequence"] + 1))
