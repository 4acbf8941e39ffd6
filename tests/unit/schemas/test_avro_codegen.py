"""The compiled writers and readers are exact: the reference path (pydantic + fastavro) is the oracle.

Every event type is drawn field by field from its model's annotations, so a type or field added to
``schemas/events.py`` is covered without touching this file.
"""

from __future__ import annotations

import enum
import io
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import annotated_types
import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator
from pydantic.fields import FieldInfo

from schemas.avro_codegen import (
    InvalidBody,
    UnsupportedBinding,
    compile_reader,
    compile_writer,
    constructor,
)
from schemas.events import (
    PAYLOAD_TYPES,
    Envelope,
    Event,
    LlmCallCompleted,
    LlmCallRequested,
    Payload,
    RecordDeadLettered,
)
from schemas.serde import binding_problem, parsed_schema

EVENT_TYPES = list(PAYLOAD_TYPES.values())
few = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- drawing any model from its annotations --------------------------------------------------------

offsets = st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)))
aware_times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC) | offsets
)
texts = st.text(max_size=40) | st.text(min_size=60, max_size=400)  # one- and two-byte lengths


def values_for(annotation: Any, metadata: list[Any] | None = None) -> st.SearchStrategy[Any]:
    metadata = list(metadata or [])
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata += [c for item in extra for c in (item.metadata if isinstance(item, FieldInfo) else [item])]
    bounds = {"min_value": -(2**63), "max_value": 2**63 - 1}
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["min_value"] = max(bounds["min_value"], int(item.ge))  # type: ignore[call-overload]
        if isinstance(item, annotated_types.Le):
            bounds["max_value"] = min(bounds["max_value"], int(item.le))  # type: ignore[call-overload]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return st.none() | values_for(inner)
    if origin is list:
        return st.lists(values_for(typing.get_args(annotation)[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), values_for(typing.get_args(annotation)[1]), max_size=3)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: texts,
        int: st.integers(**bounds),
        float: st.floats(allow_nan=False),
        bool: st.booleans(),
        bytes: st.binary(max_size=80),
        UUID: st.uuids(),
        datetime: aware_times,
    }
    if annotation in simple:
        return simple[annotation]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return st.sampled_from(list(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return models(annotation)
    raise NotImplementedError(f"no strategy for {annotation!r}: extend values_for")


def models(cls: type[BaseModel]) -> st.SearchStrategy[Any]:
    fields = {name: values_for(f.annotation, f.metadata) for name, f in cls.__pydantic_fields__.items()}
    return st.fixed_dictionaries(fields).map(lambda values: cls(**values))


# --- the reference path, spelled out -------------------------------------------------------------


def reference_write(envelope: Envelope, payload: Payload) -> bytes:
    record = payload.model_dump(mode="python")
    record["envelope"] = envelope.model_dump(mode="python")
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(parsed_schema(payload.fullname())), record)
    return out.getvalue()


def reference_read(payload_type: type[Payload], body: bytes) -> tuple[Payload, Envelope]:
    source = io.BytesIO(body)
    record = fastavro.schemaless_reader(source, fastavro.parse_schema(parsed_schema(payload_type.fullname())))
    if source.tell() != len(body):
        raise ValueError("bytes left")
    assert isinstance(record, dict)
    envelope = Envelope.model_validate(record.pop("envelope"))
    return payload_type.model_validate(record), envelope


def assert_identical(a: Any, b: Any) -> None:
    """Equal, of the same types all the way down, and equal in pydantic's bookkeeping."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, BaseModel):
        assert list(a.__dict__) == list(b.__dict__)
        assert a.model_fields_set == b.model_fields_set
        assert a.__pydantic_extra__ == b.__pydantic_extra__
        assert a.__pydantic_private__ == b.__pydantic_private__
        for name in a.__dict__:
            assert_identical(a.__dict__[name], b.__dict__[name])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_identical(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_identical(a[key], b[key])
    elif isinstance(a, datetime):
        assert (a, a.tzinfo, a.fold) == (b, b.tzinfo, b.fold)
    elif isinstance(a, UUID):
        assert (a, a.is_safe) == (b, b.is_safe)
    else:
        assert a == b


def compiled(payload_type: type[Payload]) -> tuple[Any, Any]:
    schema = parsed_schema(payload_type.fullname())
    detached = {"envelope": Envelope}
    return compile_writer(schema, payload_type, detached), compile_reader(schema, payload_type, detached)


# --- properties over every event type --------------------------------------------------------------


@pytest.mark.parametrize("payload_type", EVENT_TYPES, ids=lambda t: t.__name__)
@few
@given(data=st.data())
def test_compiled_writer_writes_the_reference_bytes(payload_type: type[Payload], data: st.DataObject) -> None:
    envelope, payload = data.draw(models(Envelope)), data.draw(models(payload_type))
    write, _ = compiled(payload_type)
    assert write(payload, envelope) == reference_write(envelope, payload)


@pytest.mark.parametrize("payload_type", EVENT_TYPES, ids=lambda t: t.__name__)
@few
@given(data=st.data())
def test_compiled_reader_builds_what_validation_builds(
    payload_type: type[Payload], data: st.DataObject
) -> None:
    envelope, payload = data.draw(models(Envelope)), data.draw(models(payload_type))
    body = reference_write(envelope, payload)
    _, read = compiled(payload_type)
    fast = read(body)
    assert_identical(fast, reference_read(payload_type, body))
    assert fast == (payload, envelope)


@pytest.mark.parametrize("payload_type", [LlmCallRequested, LlmCallCompleted], ids=lambda t: t.__name__)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_damaged_body_the_compiled_reader_accepts_is_one_the_reference_reads_the_same(
    payload_type: type[Payload], data: st.DataObject
) -> None:
    body = bytearray(reference_write(data.draw(models(Envelope)), data.draw(models(payload_type))))
    at = data.draw(st.integers(0, len(body)))
    damage = data.draw(st.sampled_from(["truncate", "append", "flip", "insert", "delete"]))
    if damage == "truncate":
        del body[at:]
    elif damage == "append":
        body += data.draw(st.binary(min_size=1, max_size=3))
    elif damage == "insert":
        body[at:at] = data.draw(st.binary(min_size=1, max_size=2))
    elif at < len(body):
        if damage == "flip":
            body[at] ^= data.draw(st.integers(1, 255))
        else:
            del body[at]
    _, read = compiled(payload_type)
    try:
        fast = read(bytes(body))
    except Exception:
        return  # refusing is always allowed: serde then lets the reference path decide
    assert_identical(fast, reference_read(payload_type, bytes(body)))


def _with_event_id(event_id: str) -> bytes:
    """A LlmCallRequested body whose envelope's event id is written as ``event_id`` (any text)."""
    envelope = Envelope(
        event_id=UUID(int=1),
        task_id="t",
        org_id="o",
        user_id="u",
        sequence=0,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        correlation_id="t",
        producer="p",
        producer_version="1",
    )
    payload = LlmCallRequested(step=1, idempotency_key="k", provider="p", model="m", messages_json="[]")
    canonical = str(envelope.event_id).encode()
    body = reference_write(envelope, payload)
    written = event_id.encode()
    # The id is the body's first field: its length, then the text.
    out = io.BytesIO()
    fastavro.schemaless_writer(out, {"type": "long"}, len(written))
    return out.getvalue() + written + body[1 + len(canonical) :]


def _read_as_the_reference_reads(body: bytes) -> None:
    _, read = compiled(LlmCallRequested)
    try:
        expected: Any = reference_read(LlmCallRequested, body)
    except ValueError:
        with pytest.raises(ValueError):
            read(body)
        return
    try:
        fast = read(body)
    except Exception:
        return  # refusing is always allowed: the reference path then reads it
    assert_identical(fast, expected)


SAMPLE_ID = "8e3f6c52-1b7a-4f0b-9c1d-2a3b4c5d6e7f"


@pytest.mark.parametrize(
    "event_id",
    [
        SAMPLE_ID,
        SAMPLE_ID.upper(),
        SAMPLE_ID.replace("-", ""),
        "{" + SAMPLE_ID + "}",
        "urn:uuid:" + SAMPLE_ID,
        "URN:UUID:" + SAMPLE_ID,
        "uuid:" + SAMPLE_ID,
        " " + SAMPLE_ID,
        SAMPLE_ID[:-1],
        "+" + SAMPLE_ID[1:],
        "-" + SAMPLE_ID[1:],
        SAMPLE_ID.replace("-", "_", 1),
        SAMPLE_ID.replace("-", "", 1)[:8] + "-" + SAMPLE_ID[8:],
        "not a uuid at all",
        "",
    ],
)
def test_event_ids_in_any_spelling_read_as_uuid_reads_them(event_id: str) -> None:
    _read_as_the_reference_reads(_with_event_id(event_id))


@few
@given(
    st.uuids()
    .map(str)
    .flatmap(lambda u: st.sampled_from([u, u.upper(), u.replace("-", ""), "{" + u + "}", "urn:uuid:" + u]))
    | st.text(alphabet="0123456789abcdefABCDEF-{}:urn ", max_size=45)
)
def test_any_event_id_text_reads_as_uuid_reads_it(event_id: str) -> None:
    _read_as_the_reference_reads(_with_event_id(event_id))


@few
@given(models(RecordDeadLettered))
def test_dead_letters_compile_exactly(record: RecordDeadLettered) -> None:
    schema = parsed_schema(RecordDeadLettered.fullname())
    write, read = compile_writer(schema, RecordDeadLettered), compile_reader(schema, RecordDeadLettered)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record.model_dump(mode="python"))
    assert write(record) == out.getvalue()
    expected = RecordDeadLettered.model_validate(
        fastavro.schemaless_reader(io.BytesIO(out.getvalue()), fastavro.parse_schema(schema))
    )
    assert_identical(read(out.getvalue()), expected)


@pytest.mark.parametrize("payload_type", [LlmCallRequested, LlmCallCompleted], ids=lambda t: t.__name__)
def test_the_llm_call_events_take_the_compiled_path(payload_type: type[Payload]) -> None:
    # The serde goal of issue 4 depends on it; binding_problem says what a model change broke.
    assert binding_problem(payload_type) is None


@few
@given(models(Envelope), models(LlmCallCompleted), st.text(alphabet="0123456789abcdef", max_size=64))
def test_the_event_constructor_builds_what_validation_builds(
    envelope: Envelope, payload: LlmCallCompleted, digest: str
) -> None:
    assert_identical(
        constructor(Event)(envelope, payload, digest),
        Event(envelope=envelope, payload=payload, digest=digest),
    )


# --- what the compiler refuses, and what a compiled reader refuses -------------------------------


def _record(*fields: tuple[str, Any]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": "Probe",
        "namespace": "test",
        "fields": [{"name": name, "type": avro_type} for name, avro_type in fields],
    }


class Counted(BaseModel):
    count: int = Field(ge=0)
    label: str


def test_constraints_are_checked_by_the_compiled_reader() -> None:
    read = compile_reader(_record(("count", "long"), ("label", "string")), Counted)
    assert read(b"\x04\x02x") == Counted(count=2, label="x")
    with pytest.raises(InvalidBody, match=r"Counted\.count"):
        read(b"\x03\x02x")  # count = -2


def test_the_compiled_reader_refuses_what_is_not_the_body_of_its_schema() -> None:
    read = compile_reader(_record(("count", "long"), ("label", "string")), Counted)
    with pytest.raises(InvalidBody, match="bytes left"):
        read(b"\x04\x02x\x00")
    with pytest.raises(InvalidBody, match="bytes left or missing"):
        read(b"\x04\x04x")  # the label claims two bytes, one is there
    with pytest.raises(IndexError):
        read(b"\x04")
    with pytest.raises(InvalidBody, match="longer than 10 bytes"):
        read(b"\xff" * 11 + b"\x00")
    with pytest.raises(UnicodeDecodeError):
        read(b"\x04\x02\xff")


class BeforeValidated(BaseModel):
    label: str

    @field_validator("label", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value


class Serialized(BaseModel):
    label: str

    @field_serializer("label")
    def _upper(self, value: str) -> str:
        return value.upper()


class Strict(BaseModel):
    model_config = ConfigDict(strict=True)
    label: str


class Aliased(BaseModel):
    label: str = Field(alias="name")


class Mixed(BaseModel):
    label: str | int


@pytest.mark.parametrize(
    ("model", "schema", "reason"),
    [
        (BeforeValidated, _record(("label", "string")), "'before' validator"),
        (Strict, _record(("label", "string")), "strict"),
        (Aliased, _record(("label", "string")), "alias"),
        (Mixed, _record(("label", ["string", "long"])), "union"),
        (Counted, _record(("count", "long")), "differ"),
        (Counted, _record(("count", "double"), ("label", "string")), "bound to"),
    ],
)
def test_what_is_not_reproduced_exactly_is_not_compiled(
    model: type[BaseModel], schema: dict[str, Any], reason: str
) -> None:
    with pytest.raises(UnsupportedBinding, match=reason):
        compile_reader(schema, model)


def test_a_model_whose_dump_differs_from_its_attributes_gets_no_writer() -> None:
    with pytest.raises(UnsupportedBinding, match="serializers"):
        compile_writer(_record(("label", "string")), Serialized)


@pytest.mark.parametrize("size", [63, 64, 8191, 8192, 70_000])
def test_lengths_of_every_varint_width_round_trip(size: int) -> None:
    envelope = Envelope(
        event_id=UUID(int=7),
        task_id="t",
        org_id="o",
        user_id="u",
        sequence=2**40,
        occurred_at=datetime(1969, 7, 20, 20, 17, 40, 999999, tzinfo=UTC),
        correlation_id="t",
        producer="p",
        producer_version="1",
    )
    payload = LlmCallRequested(
        step=-5,
        idempotency_key="k",
        provider="p",
        model="m",
        messages_json="é" * (size // 2) + "x" * (size % 2),
    )
    write, read = compiled(LlmCallRequested)
    body = write(payload, envelope)
    assert body == reference_write(envelope, payload)
    assert_identical(read(body), reference_read(LlmCallRequested, body))
