"""Avro serde and the Confluent wire format."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events import Envelope, Event, LlmCallCompleted, LlmCallRequested, Priority, TaskSubmitted
from schemas.serde import (
    RecordDecodeError,
    UnknownRecordError,
    WireFormatError,
    decode_event,
    frame,
    parsed_schema,
    schema_json,
    seal,
    unframe,
)

texts = st.text(max_size=50)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    return Envelope(
        event_id=uuid.UUID(int=draw(st.integers(0, 2**128 - 1))),
        task_id=draw(texts),
        org_id=draw(texts),
        user_id=draw(texts),
        sequence=draw(st.integers(0, 2**62)),
        occurred_at=draw(times),
        causation_id=draw(st.none() | texts),
        correlation_id=draw(texts),
        producer=draw(texts),
        producer_version=draw(texts),
        prev_hash=draw(st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
    )


@given(
    envelopes(),
    st.builds(
        TaskSubmitted,
        query=texts,
        context=st.dictionaries(texts, texts, max_size=3),
        priority=st.sampled_from(Priority),
        session_id=st.none() | texts,
        idempotency_key=st.none() | texts,
    ),
)
def test_task_submitted_round_trips(envelope: Envelope, payload: TaskSubmitted) -> None:
    event, body = seal(envelope, payload)
    assert decode_event(body, schema_json(TaskSubmitted.fullname())) == event


@given(envelopes(), st.integers(0, 10**9), st.floats(0, 1e6), st.none() | texts)
def test_llm_call_completed_round_trips(
    envelope: Envelope, tokens: int, latency: float, content: str | None
) -> None:
    payload = LlmCallCompleted(
        step=1,
        idempotency_key="k",
        provider="p",
        model="m",
        content=content,
        finish_reason="stop",
        prompt_tokens=tokens,
        completion_tokens=1,
        total_tokens=tokens + 1,
        latency_ms=latency,
        offline=True,
        response_json="{}",
    )
    event, body = seal(envelope, payload)
    assert decode_event(body, schema_json(LlmCallCompleted.fullname())) == event


def test_digest_is_sha256_of_the_body_and_changes_with_content() -> None:
    import hashlib

    envelope = Envelope(
        event_id=uuid.uuid4(),
        task_id="t",
        org_id="o",
        user_id="u",
        sequence=0,
        occurred_at=datetime.now(UTC),
        correlation_id="t",
        producer="p",
        producer_version="1",
    )
    event, body = seal(envelope, TaskSubmitted(query="a"))
    assert event.digest == hashlib.sha256(body).hexdigest()
    assert seal(envelope, TaskSubmitted(query="b"))[0].digest != event.digest


def test_frame_and_unframe() -> None:
    assert unframe(frame(7, b"body")) == (7, b"body")
    assert frame(7, b"x")[:5] == struct.pack(">bI", 0, 7)


@pytest.mark.parametrize(
    ("data", "message"),
    [(None, "tombstone"), (b"\x00\x00", "shorter"), (b"\x01\x00\x00\x00\x01xx", "magic byte")],
)
def test_unframe_rejects_non_confluent_bytes(data: bytes | None, message: str) -> None:
    with pytest.raises(WireFormatError, match=message):
        unframe(data)


def test_decoding_an_unknown_record_is_an_error() -> None:
    writer = '{"type":"record","name":"Stranger","namespace":"x","fields":[]}'
    with pytest.raises(UnknownRecordError, match=r"x\.Stranger"):
        decode_event(b"", writer)


def test_envelope_requires_aware_time_and_keeps_milliseconds() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Envelope(
            event_id=uuid.uuid4(),
            task_id="t",
            org_id="o",
            user_id="u",
            sequence=0,
            occurred_at=datetime(2026, 1, 1),
            correlation_id="t",
            producer="p",
            producer_version="1",
        )


# --- the compiled paths change nothing a caller can see (see also test_avro_codegen.py) ----------


def _llm_request() -> tuple[Envelope, LlmCallRequested]:
    envelope = Envelope(
        event_id=uuid.uuid4(),
        task_id="t",
        org_id="o",
        user_id="u",
        sequence=3,
        occurred_at=datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        causation_id=str(uuid.uuid4()),
        correlation_id="t",
        producer="p",
        producer_version="1",
        prev_hash="ab" * 32,
    )
    payload = LlmCallRequested(
        step=2, idempotency_key="t:main:2", provider="p", model="m", messages_json="[]", tools=["calculator"]
    )
    return envelope, payload


def _fastavro_body(fullname: str, record: dict[str, object], schema: dict[str, Any] | None = None) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema or parsed_schema(fullname)), record)
    return out.getvalue()


def _record(envelope: Envelope, payload: LlmCallRequested, **changes: object) -> dict[str, object]:
    record = payload.model_dump(mode="python")
    record["envelope"] = envelope.model_dump(mode="python")
    for key, value in changes.items():
        if key.startswith("envelope_"):
            record["envelope"][key.removeprefix("envelope_")] = value  # type: ignore[index]
        else:
            record[key] = value
    return record


def test_seal_is_the_validated_event_of_the_exact_body() -> None:
    envelope, payload = _llm_request()
    event, body = seal(envelope, payload)
    assert body == _fastavro_body(payload.fullname(), _record(envelope, payload))
    assert event == Event(envelope=envelope, payload=payload, digest=hashlib.sha256(body).hexdigest())
    assert decode_event(body, schema_json(payload.fullname())) == event


def test_a_body_with_bytes_after_the_record_is_refused() -> None:
    envelope, payload = _llm_request()
    _, body = seal(envelope, payload)
    with pytest.raises(ValueError, match="1 bytes left after decoding"):
        decode_event(body + b"\x00", schema_json(payload.fullname()))


@pytest.mark.parametrize("keep", [0, 1, 17, -1])
def test_a_truncated_body_is_refused(keep: int) -> None:
    envelope, payload = _llm_request()
    _, body = seal(envelope, payload)
    with pytest.raises(RecordDecodeError, match="EOFError") as raised:
        decode_event(body[:keep], schema_json(payload.fullname()))
    assert isinstance(raised.value.__cause__, EOFError)


def test_a_body_written_with_another_schema_is_refused() -> None:
    envelope, payload = _llm_request()
    _, body = seal(envelope, payload)
    with pytest.raises(RecordDecodeError, match="TaskSubmitted"):
        decode_event(body, schema_json(TaskSubmitted.fullname()))


def test_a_negative_sequence_in_a_body_fails_validation() -> None:
    envelope, payload = _llm_request()
    negative = _fastavro_body(payload.fullname(), _record(envelope, payload, envelope_sequence=-1))
    with pytest.raises(
        RecordDecodeError, match=r"Envelope\.sequence: Input should be greater than or equal to 0 \(got -1\)"
    ) as raised:
        decode_event(negative, schema_json(payload.fullname()))
    assert isinstance(raised.value.__cause__, ValidationError)


@pytest.mark.parametrize(
    "changes",
    [{"step": 2**40}, {"step": -(2**31) - 1}, {"envelope_sequence": 2**62}, {"tools": ["a", ""]}],
    ids=str,
)
def test_decoding_accepts_exactly_what_the_models_accept(changes: dict[str, object]) -> None:
    # fastavro writes and reads Avro ints as 64-bit varints: the models decide what fits.
    envelope, payload = _llm_request()
    record = _record(envelope, payload, **changes)
    body = _fastavro_body(payload.fullname(), record)
    try:
        expected = Event(
            envelope=Envelope.model_validate(record.pop("envelope")),
            payload=LlmCallRequested.model_validate(record),
            digest=hashlib.sha256(body).hexdigest(),
        )
    except ValidationError as refused:
        with pytest.raises(RecordDecodeError) as raised:
            decode_event(body, schema_json(payload.fullname()))
        assert isinstance(raised.value.__cause__, ValidationError)
        assert raised.value.__cause__.errors() == refused.errors()
        return
    assert decode_event(body, schema_json(payload.fullname())) == expected


def test_a_body_written_with_an_older_schema_is_resolved_to_ours() -> None:
    envelope, payload = _llm_request()
    older = json.loads(schema_json(payload.fullname()))
    older["fields"] = [f for f in older["fields"] if f["name"] != "attempt"]
    record = _record(envelope, payload)
    del record["attempt"]
    decoded = decode_event(_fastavro_body(payload.fullname(), record, older), json.dumps(older))
    assert decoded.payload == payload.model_copy(update={"attempt": 1})
    assert decoded.envelope == envelope
