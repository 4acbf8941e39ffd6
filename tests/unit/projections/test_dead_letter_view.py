"""The dead-letter row: where it is, what it names, and the listing's cursor."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.dead_letter_view import DeadLetterCursor, DeadLetterEntry, dead_letter_row
from schemas.events import RecordDeadLettered
from schemas.requests import CancellationRequested, RequestHeader
from streams.consumer import DeadLetter
from tests.unit.projections.histories import planned_task

AT = datetime(2026, 11, 3, 12, 0, 0, 123000, tzinfo=UTC)
GARBAGE = b"\x00\x00\x00\xff\xffnot avro"


def parked(
    value: bytes | None = GARBAGE, headers: dict[str, str] | None = None, *, key: bytes | None = b"k"
) -> RecordDeadLettered:
    return RecordDeadLettered(
        dead_letter_id=uuid.UUID(int=7),
        occurred_at=AT,
        source_topic="p.tasks.requests",
        source_partition=3,
        source_offset=41,
        key=key,
        value=value,
        headers=headers or {},
        error_type="WireFormatError",
        error="bad magic byte",
        consumer="p-task-runner",
    )


def test_a_record_that_never_decoded_keeps_its_position_reason_and_a_digest_of_its_bytes() -> None:
    row = dead_letter_row(DeadLetter(parked(), None, "p.deadletter", 1, 9))

    assert (row.topic, row.kafka_partition, row.kafka_offset) == ("p.deadletter", 1, 9)
    assert (row.source_topic, row.source_partition, row.source_offset) == ("p.tasks.requests", 3, 41)
    assert (row.error_type, row.error, row.consumer) == ("WireFormatError", "bad magic byte", "p-task-runner")
    assert row.dead_letter_id == uuid.UUID(int=7) and row.dead_lettered_at == AT
    assert row.value == GARBAGE and row.value_size == len(GARBAGE)
    assert row.value_sha256 == hashlib.sha256(GARBAGE).hexdigest()
    assert (row.org_id, row.task_id, row.event_type) == (None, None, None)
    assert row.record_key == b"k"


def test_cloudevents_headers_name_the_task_and_type_of_an_undecodable_record() -> None:
    headers = {"ce_subject": "task-9", "ce_type": "agentlog.events.TaskSubmitted", "source": "x"}
    row = dead_letter_row(DeadLetter(parked(headers=headers), None, "p.deadletter", 0, 0))

    assert (row.org_id, row.task_id, row.event_type) == (None, "task-9", "agentlog.events.TaskSubmitted")
    assert row.headers == headers


def test_a_decoded_event_names_its_org_task_and_type_over_its_headers() -> None:
    submission = planned_task("task-1", org_id="globex")[0]
    headers = {"ce_subject": "someone-else", "ce_type": "other"}
    row = dead_letter_row(DeadLetter(parked(headers=headers), submission, "p.deadletter", 0, 0))

    assert (row.org_id, row.task_id) == ("globex", "task-1")
    assert row.event_type == submission.payload.fullname()


def test_a_decoded_request_names_its_org_and_task() -> None:
    request = CancellationRequested(
        header=RequestHeader(
            request_id=uuid.UUID(int=1),
            task_id="task-2",
            org_id="initech",
            user_id="u",
            issued_at=AT,
            producer="test",
            producer_version="0",
        ),
        reason="stop",
    )
    row = dead_letter_row(DeadLetter(parked(), request, "p.deadletter", 0, 0))

    assert (row.org_id, row.task_id, row.event_type) == ("initech", "task-2", request.fullname())


def test_a_record_without_value_has_size_zero_and_no_digest() -> None:
    row = dead_letter_row(DeadLetter(parked(value=None, key=None), None, "p.deadletter", 0, 0))

    assert (row.value, row.value_size, row.value_sha256, row.record_key) == (None, 0, None, None)


def test_an_undecodable_key_serialises_to_json() -> None:
    fields = dead_letter_row(DeadLetter(parked(key=b"\xff\xfe"), None, "t", 0, 0)).model_dump()
    del fields["value"]
    entry = DeadLetterEntry(id=1, **fields)

    assert DeadLetterEntry.model_validate_json(entry.model_dump_json()) == entry


@given(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    st.integers(min_value=1, max_value=2**63 - 1),
)
def test_a_cursor_token_names_the_same_cursor(at: datetime, row_id: int) -> None:
    cursor = DeadLetterCursor(dead_lettered_at=at, id=row_id)

    assert DeadLetterCursor.parse(cursor.token()) == cursor


@pytest.mark.parametrize("token", ["", "12", "12.", ".3", "a.3", "1.2.3", "1 .2"])
def test_a_malformed_token_is_refused_with_its_text(token: str) -> None:
    with pytest.raises(ValueError, match="is not a dead-letter cursor"):
        DeadLetterCursor.parse(token)
