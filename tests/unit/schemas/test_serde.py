"""Avro serde and the Confluent wire format."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import Envelope, LlmCallCompleted, Priority, TaskSubmitted
from schemas.serde import (
    UnknownRecordError,
    WireFormatError,
    decode_event,
    frame,
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
