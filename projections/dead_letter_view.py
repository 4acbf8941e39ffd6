"""``dead_letters``: one row per record on the dead-letter topic, and the listing's cursor.

A row is built from the dead-letter record alone (plus the parked value, when that decodes), so it
is a pure function of what was read; the writer inserts it under the dead-letter record's own Kafka
position, which makes redelivery a no-op.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from schemas.events import Event
from schemas.requests import TaskRequest
from streams.consumer import DeadLetter

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"^(-?\d{1,19})\.(\d{1,19})$")


class _DeadLetterFields(BaseModel):
    # Bytes as base64 in JSON: a parked key is arbitrary bytes, not UTF-8.
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    topic: str
    kafka_partition: int
    kafka_offset: int
    dead_letter_id: UUID
    dead_lettered_at: datetime
    source_topic: str
    source_partition: int
    source_offset: int
    consumer: str
    error_type: str
    error: str
    org_id: str | None
    task_id: str | None
    event_type: str | None
    record_key: bytes | None
    headers: dict[str, str]
    value_size: int
    value_sha256: str | None


class DeadLetterRow(_DeadLetterFields):
    """What the writer inserts: the listed fields plus the parked value's bytes."""

    value: bytes | None


class DeadLetterEntry(_DeadLetterFields):
    """A listed dead letter: the value's size and SHA-256 stand for its bytes, which can be large."""

    id: int


class DeadLetterCursor(BaseModel):
    """Where a newest-first page of dead letters ends: the next page holds the entries before it."""

    model_config = ConfigDict(frozen=True)

    dead_lettered_at: datetime
    id: int

    @classmethod
    def of(cls, entry: DeadLetterEntry) -> DeadLetterCursor:
        return cls(dead_lettered_at=entry.dead_lettered_at, id=entry.id)

    def token(self) -> str:
        """An opaque, URL-safe text form: ``<microseconds since the epoch>.<id>``."""
        micros = (self.dead_lettered_at - _EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.id}"

    @classmethod
    def parse(cls, token: str) -> DeadLetterCursor:
        """The cursor ``token`` names; ``ValueError`` naming the token when it names none."""
        match = _CURSOR.match(token)
        if match is None:
            raise ValueError(f"{token!r} is not a dead-letter cursor; expected <micros>.<id>")
        at = _EPOCH + timedelta(microseconds=int(match.group(1)))
        return cls(dead_lettered_at=at, id=int(match.group(2)))


def dead_letter_row(dead_letter: DeadLetter) -> DeadLetterRow:
    """The row of ``dead_letter``. The org, task and record type come from the parked value when it
    decodes (a record parked because its handling failed), else the task and type from its
    CloudEvents headers; a record that never decoded and had no headers names neither."""
    record = dead_letter.record
    org_id = task_id = event_type = None
    original = dead_letter.original
    if isinstance(original, Event):
        org_id, task_id, event_type = original.envelope.org_id, original.task_id, original.payload.fullname()
    elif isinstance(original, TaskRequest):
        org_id, task_id, event_type = original.header.org_id, original.task_id, original.fullname()
    value = record.value
    return DeadLetterRow(
        topic=dead_letter.topic,
        kafka_partition=dead_letter.partition,
        kafka_offset=dead_letter.offset,
        dead_letter_id=record.dead_letter_id,
        dead_lettered_at=record.occurred_at,
        source_topic=record.source_topic,
        source_partition=record.source_partition,
        source_offset=record.source_offset,
        consumer=record.consumer,
        error_type=record.error_type,
        error=record.error,
        org_id=org_id,
        task_id=task_id or record.headers.get("ce_subject") or None,
        event_type=event_type or record.headers.get("ce_type") or None,
        record_key=record.key,
        headers=record.headers,
        value=value,
        value_size=len(value) if value is not None else 0,
        value_sha256=hashlib.sha256(value).hexdigest() if value is not None else None,
    )
