"""Hostile bytes through the decoders the consumers call: ``EventCodec.decode`` (processor state,
audit), ``decode_record`` (task worker, projectors, reconcile), ``decode_dead_letter`` (dead-letter
projector) and ``serde.decode_event`` (``agentlog verify``/export read bodies with it directly).

Property, for arbitrary bytes, Confluent frames with any schema id, and valid records of every kind
with bytes flipped, cut, inserted or appended, or framed with another record's schema id: the
decoder returns a record its pydantic model accepts, or raises :class:`RecordDecodeError` with a
one-line message naming the record or the framing problem. Never another exception type, and every
input is decided within the example deadline (no hang).

The registry is the real store (:class:`SchemaStore`), loaded the way the registry loads its topic,
with our schemas, released older versions and schemas a foreign producer could have registered in a
shared registry; a client answers from it exactly as ``RegistryClient`` answers from the HTTP API.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.corpus import corpus_files, load_history
from schemas.codec import EventCodec, UnknownSchemaIdError
from schemas.events import Envelope, Event, RecordDeadLettered
from schemas.registry.client import RegistryClient, RegistryRejected
from schemas.registry.store import SchemaStore, normalize
from schemas.releases import released_versions
from schemas.requests import (
    ApprovalDecided,
    CancellationRequested,
    RequestHeader,
    TaskForkRequested,
    TaskRequest,
)
from schemas.serde import (
    RecordDecodeError,
    decode_event,
    encode_dead_letter,
    encode_event,
    encode_request,
    frame,
    record_fullnames,
    schema_json,
    unframe,
)

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
# Schemas another producer may have registered in the same registry: none is a record of ours.
FOREIGN_SCHEMAS = (
    '"string"',
    '{"type":"array","items":"long"}',
    '["null","string"]',
    '{"type":"enum","name":"Colour","symbols":["RED","GREEN"]}',
    '{"type":"record","name":"Invoice","namespace":"billing","fields":[{"name":"n","type":"long"}]}',
    # Our record's name with another shape: resolution to our schema must fail cleanly.
    '{"type":"record","name":"TaskSubmitted","namespace":"agentlog.events",'
    '"fields":[{"name":"query","type":"long"}]}',
)
# Either a record fullname (the record whose body failed) or what the framing got wrong.
NAMES_THE_PROBLEM = re.compile(
    r"agentlog\.|schema id \d+|magic byte|Confluent header|tombstone|writer schema|billing\.|Colour"
)


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        # Generous: the machine is shared; a decoder that hangs on a crafted length still trips it.
        deadline=timedelta(seconds=5),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class _Registry:
    """The real schema store, loaded as the registry loads its topic (one record per version)."""

    def __init__(self) -> None:
        self.store = SchemaStore()
        self.ids: dict[str, int] = {}
        texts = [(f"agentlog.tasks.events-{name}", schema_json(name)) for name in record_fullnames()]
        texts += [
            (f"agentlog.tasks.events-{name}", text)
            for name, versions in released_versions().items()
            for text in versions
        ]
        texts += [(f"foreign-{i}", text) for i, text in enumerate(FOREIGN_SCHEMAS)]
        versions: dict[str, int] = {}
        for subject, text in texts:
            normalized = normalize(text)
            if self.store.lookup(subject, normalized) is not None:
                continue
            schema_id = next((known for known, held in self._held() if held == normalized), len(self.ids) + 1)
            versions[subject] = versions.get(subject, 0) + 1
            record = {"subject": subject, "version": versions[subject], "id": schema_id, "schema": normalized}
            self.store._apply(record)  # what SchemaStore.start does with each record of its topic
            self.ids.setdefault(normalized, schema_id)
        self.current = {name: self.ids[normalize(schema_json(name))] for name in record_fullnames()}

    def _held(self) -> Iterator[tuple[int, str]]:
        for text, schema_id in self.ids.items():
            yield schema_id, text


class StoreBackedRegistryClient(RegistryClient):
    """``RegistryClient`` answering from the store, with the HTTP API's 404 for an unknown id."""

    def __init__(self, registry: _Registry) -> None:
        super().__init__("http://127.0.0.1:9")  # never called: every lookup is answered below
        self._registry = registry

    async def schema(self, schema_id: int) -> str:
        text = self._registry.store.schema_by_id(schema_id)
        if text is None:
            raise RegistryRejected(404, {"error_code": 40403, "message": f"Schema {schema_id} not found"})
        return text


REGISTRY = _Registry()
CODEC = EventCodec(StoreBackedRegistryClient(REGISTRY))
LOOP = asyncio.new_event_loop()
KNOWN_IDS = sorted(set(REGISTRY.ids.values()))


def _corpus_events() -> list[Event]:
    events = [event for path in corpus_files(CORPUS) for event in load_history(path)]
    assert len({type(event.payload) for event in events}) >= 15, "the corpus should cover most event kinds"
    return events


def _requests() -> list[TaskRequest]:
    header = RequestHeader(
        request_id=uuid.UUID(int=7),
        task_id="task-1",
        org_id="acme",
        user_id="alice",
        issued_at=datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
        producer="api",
        producer_version="1",
    )
    return [
        CancellationRequested(header=header, reason="stop"),
        ApprovalDecided(header=header, approval_id="ap-1", approved=True, reason="ok"),
        TaskForkRequested(header=header, source_task_id="task-0", prefix_events=3, overrides={"a": "b"}),
    ]


DEAD_LETTER = RecordDeadLettered(
    dead_letter_id=uuid.UUID(int=9),
    occurred_at=datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
    source_topic="agentlog.tasks.requests",
    source_partition=3,
    source_offset=17,
    key=b"task-1",
    value=b"\x00\x00\x00\x00\x01garbage",
    headers={"ce_type": "x"},
    error_type="WireFormatError",
    error="bad",
    consumer="processor",
)
EVENTS = _corpus_events()


# (framed bytes, what they decode to): every event kind of the corpus, the requests, a dead letter.
def _framed_event(event: Event) -> tuple[bytes, Event]:
    # The corpus's digests are of the bodies first written; today's encoding is the one framed here.
    body = encode_event(event)
    resealed = event.model_copy(update={"digest": hashlib.sha256(body).hexdigest()})
    return frame(REGISTRY.current[event.payload.fullname()], body), resealed


VALID: list[tuple[bytes, Event | TaskRequest | RecordDeadLettered]] = [
    *(_framed_event(e) for e in EVENTS),
    *((frame(REGISTRY.current[r.fullname()], encode_request(r)), r) for r in _requests()),
    (frame(REGISTRY.current[DEAD_LETTER.fullname()], encode_dead_letter(DEAD_LETTER)), DEAD_LETTER),
]

Decoder = Callable[[bytes | None], Awaitable[Any]]
DECODERS: dict[str, Decoder] = {
    "decode": CODEC.decode,
    "decode_record": CODEC.decode_record,
    "decode_dead_letter": CODEC.decode_dead_letter,
}


def _decode_event_directly(data: bytes | None) -> Event:
    """``serde.decode_event`` after unframing, as ``audit.log`` reads bodies."""
    schema_id, body = unframe(data)
    text = REGISTRY.store.schema_by_id(schema_id)
    if text is None:
        raise UnknownSchemaIdError(f"schema id {schema_id} is not in the registry")
    return decode_event(body, text)


def _model_accepts(record: Any, data: bytes) -> None:
    """The decoded record is what its models accept (the compiled readers skip re-validation)."""
    if isinstance(record, Event):
        assert Envelope.model_validate(record.envelope.model_dump()) == record.envelope
        assert type(record.payload).model_validate(record.payload.model_dump()) == record.payload
        assert record.digest == hashlib.sha256(data[5:]).hexdigest()
    else:
        assert isinstance(record, TaskRequest | RecordDeadLettered), type(record)
        assert type(record).model_validate(record.model_dump()) == record


def decides(data: bytes | None) -> None:
    """Feed ``data`` to every decoder: a valid record or a clear RecordDecodeError, nothing else."""
    for name, decode in DECODERS.items():
        try:
            record = LOOP.run_until_complete(decode(data))
        except RecordDecodeError as exc:
            _clear(exc, name, data)
        else:
            assert data is not None
            _model_accepts(record, data)
    try:
        event = _decode_event_directly(data)
    except RecordDecodeError as exc:
        _clear(exc, "decode_event", data)
    else:
        assert data is not None
        _model_accepts(event, data)


def _clear(exc: RecordDecodeError, decoder: str, data: bytes | None) -> None:
    message = str(exc)
    assert message and "\n" not in message and len(message) < 1200, (decoder, message)
    assert NAMES_THE_PROBLEM.search(message), (decoder, message, data)


# -- the valid records decode to themselves (else the mutation tests below would prove little) ------


def _kind(index: int) -> str:
    record = VALID[index][1]
    return type(record.payload if isinstance(record, Event) else record).__name__


@pytest.mark.parametrize("index", range(len(VALID)), ids=_kind)
def test_every_valid_record_decodes_to_itself(index: int) -> None:
    data, expected = VALID[index]
    if isinstance(expected, Event):
        assert LOOP.run_until_complete(CODEC.decode(data)) == expected
        assert LOOP.run_until_complete(CODEC.decode_record(data)) == expected
    elif isinstance(expected, TaskRequest):
        assert LOOP.run_until_complete(CODEC.decode_record(data)) == expected
    else:
        assert LOOP.run_until_complete(CODEC.decode_dead_letter(data)) == expected


# -- the properties ----------------------------------------------------------------------------


@fuzz(2000)
@given(st.none() | st.binary(max_size=600))
def test_arbitrary_bytes_decode_or_raise_a_clear_decode_error(data: bytes | None) -> None:
    decides(data)


@fuzz(2000)
@given(
    st.one_of(st.sampled_from(KNOWN_IDS), st.integers(0, 2**32 - 1)),
    st.binary(max_size=600),
)
def test_framed_bytes_with_any_schema_id_decode_or_raise_a_clear_decode_error(
    schema_id: int, body: bytes
) -> None:
    decides(frame(schema_id, body))


def _mutations(size: int) -> st.SearchStrategy[tuple[str, int, bytes]]:
    position = st.integers(0, max(size - 1, 0))
    return st.one_of(
        st.tuples(st.just("flip"), position, st.binary(min_size=1, max_size=1)),
        st.tuples(st.just("xor-bit"), position, st.sampled_from([bytes([1 << b]) for b in range(8)])),
        st.tuples(st.just("truncate"), position, st.just(b"")),
        st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("extend"), st.just(size), st.binary(min_size=1, max_size=64)),
        # A varint that claims a huge length or block count, planted anywhere.
        st.tuples(
            st.just("insert"), position, st.sampled_from([b"\xfe\xff\xff\xff\x0f", b"\xff" * 9 + b"\x7f"])
        ),
    )


def _apply(data: bytes, mutation: tuple[str, int, bytes]) -> bytes:
    kind, at, blob = mutation
    at = min(at, len(data))
    if kind == "flip":
        return data[:at] + blob + data[at + 1 :]
    if kind == "xor-bit":
        return data[:at] + bytes([data[at] ^ blob[0]]) + data[at + 1 :] if at < len(data) else data
    if kind == "truncate":
        return data[:at]
    return data[:at] + blob + data[at:]


@st.composite
def mutated_records(draw: st.DrawFn) -> bytes:
    data, _ = draw(st.sampled_from(VALID))
    if draw(st.booleans()):
        # Another record's schema id on this body: schema resolution meets bytes it was not made for.
        data = frame(draw(st.sampled_from(KNOWN_IDS)), data[5:])
    for _ in range(draw(st.integers(1, 4))):
        # Mostly in the body: a mutated header is what the framed test above already covers.
        mutation = draw(_mutations(len(data)))
        if mutation[0] != "extend" and draw(st.integers(0, 9)) > 0:
            mutation = (mutation[0], max(mutation[1], 5), mutation[2])
        data = _apply(data, mutation)
    return data


@fuzz(1500)
@given(mutated_records())
def test_valid_records_flipped_cut_or_extended_decode_or_raise_a_clear_decode_error(data: bytes) -> None:
    decides(data)


def test_a_truncated_body_names_its_record_and_the_eof() -> None:
    data, expected = VALID[0]
    assert isinstance(expected, Event)
    with pytest.raises(RecordDecodeError) as raised:
        LOOP.run_until_complete(CODEC.decode(data[:20]))
    assert str(raised.value).startswith(
        f"{expected.payload.fullname()} body of 15 bytes does not decode: EOFError"
    )
    with pytest.raises(RecordDecodeError, match=r"schema id 4000000000 is not in the registry"):
        LOOP.run_until_complete(CODEC.decode(frame(4_000_000_000, b"")))
    foreign = REGISTRY.ids[normalize('"string"')]
    with pytest.raises(RecordDecodeError, match=r"writer schema '\"string\"' is not a named record"):
        LOOP.run_until_complete(CODEC.decode_record(frame(foreign, b"\x02x")))
    assert json.loads(REGISTRY.store.schema_by_id(foreign) or "null") == "string"
