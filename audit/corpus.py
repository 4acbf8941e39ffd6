"""Recorded task histories as files: one JSON line per event, in sequence order.

A line is the event model's JSON form (``envelope``, ``payload``, ``digest``) plus ``event_type``,
the payload's record name, which says which payload model reads it back. The recorded digest is
kept as written (it is the SHA-256 of the Avro body on the log), so the hash chain of a loaded
history is the one the log had.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from schemas.events import PAYLOAD_TYPES, Envelope, Event, Payload

_BY_NAME: dict[str, type[Payload]] = {cls.record_name: cls for cls in PAYLOAD_TYPES.values()}


class CorpusError(ValueError):
    """A history file that cannot be read back into events."""


def event_line(event: Event) -> str:
    """The JSON line of ``event``."""
    body = {"event_type": event.event_type, **event.model_dump(mode="json")}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def event_of_line(line: str) -> Event:
    """The event a line written by :func:`event_line` holds."""
    data = json.loads(line)
    payload_type = _BY_NAME.get(data.get("event_type", ""))
    if payload_type is None:
        raise CorpusError(f"unknown event_type {data.get('event_type')!r}")
    return Event(
        envelope=Envelope.model_validate(data["envelope"]),
        payload=payload_type.model_validate(data["payload"]),
        digest=data["digest"],
    )


def save_history(path: Path, events: Iterable[Event]) -> Path:
    """Write one task's events to ``path`` (JSON lines, sequence order)."""
    ordered = sorted(events, key=lambda event: event.sequence)
    path.write_text("".join(event_line(event) + "\n" for event in ordered), encoding="utf-8")
    return path


def load_history(path: Path) -> list[Event]:
    """The events of one history file, in sequence order; raises :class:`CorpusError` naming the line."""
    events: list[Event] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(event_of_line(line))
        except (ValueError, KeyError) as exc:
            raise CorpusError(f"{path}:{number}: {exc}") from exc
    return sorted(events, key=lambda event: event.sequence)


def corpus_files(directory: Path) -> list[Path]:
    """The history files (``*.jsonl``) of a corpus directory, by name."""
    if not directory.is_dir():
        raise CorpusError(f"{directory} is not a directory")
    return sorted(directory.glob("*.jsonl"))
