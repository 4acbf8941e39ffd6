"""The producer SDK's pure core: topic resolution, envelope defaults, and errors naming field and rule.

Every test runs over the catalogue (no event type is listed here), with valid data generated from
each type's Avro schema, so a new event type is covered as soon as the catalogue carries it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from api.cli import app
from processors.task.history import event_id_for
from schemas.events import PAYLOAD_TYPES, AuditSealed, Event, RecordDeadLettered, TaskSubmitted
from schemas.requests import REQUEST_TYPES, TaskRequest
from schemas.serde import decode_dead_letter, decode_event, decode_request, parsed_schema, schema_json
from streams.history import partition_for
from streams.sdk import (
    SDK_PRODUCER,
    SDK_VERSION,
    CatalogueEntry,
    EventValidationError,
    FieldProblem,
    UnknownEventTypeError,
    event_types,
    prepare,
    resolve_event_type,
)
from streams.settings import Settings
from streams.topics import CATALOGUE, EVENTS, REQUESTS

SETTINGS = Settings(topic_prefix="unit")
NOW = datetime(2030, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)
NEW_ID = uuid.UUID("00000000-0000-4000-8000-00000000abcd")
PREV_HASH = "ab" * 32
ENTRIES = event_types()
TASK_ENTRIES = [e for e in ENTRIES if e.is_task_event]
CONTINUING_ENTRIES = [e for e in TASK_ENTRIES if not e.starts_task]
HISTORY_ENTRIES = [e for e in CONTINUING_ENTRIES if e.in_history]
OUTSIDE_HISTORY_ENTRIES = [e for e in CONTINUING_ENTRIES if not e.in_history]
GIVEN_EVENT_ID = "4d1f8a8e-1f7e-4a53-8b8c-6f1f5f3c2b10"
INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)


# -- valid data of any type, from its Avro schema ----------------------------------------------


def _named(fullname: str) -> dict[str, Any]:
    named: dict[str, Any] = {}
    fastavro.parse_schema(parsed_schema(fullname), named_schemas=named)
    return named


def _sample(schema: Any, named: dict[str, Any]) -> Any:
    """A valid value of ``schema``; a record gets only the fields that have no default."""
    if isinstance(schema, list):
        return _sample(schema[0], named)
    if isinstance(schema, str):
        if schema in named:
            return _sample(named[schema], named)
        primitives = {"null": None, "boolean": True, "int": 1, "long": 1, "float": 1.0, "double": 1.0}
        return primitives.get(schema, "x")  # string (bytes fields accept text too)
    kind = schema["type"]
    if isinstance(kind, dict | list):
        return _sample(kind, named)
    if schema.get("logicalType") in ("timestamp-millis", "timestamp-micros"):
        return NOW.isoformat()
    if schema.get("logicalType") == "uuid":
        return str(uuid.uuid4())
    if kind == "record":
        return {f["name"]: _sample(f["type"], named) for f in schema["fields"] if "default" not in f}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "array":
        return [_sample(schema["items"], named)]
    if kind == "map":
        return {"k": _sample(schema["values"], named)}
    return _sample(kind, named)


def _fields(entry: CatalogueEntry) -> list[dict[str, Any]]:
    return [f for f in parsed_schema(entry.fullname)["fields"] if f["name"] != "envelope"]


def _envelope(entry: CatalogueEntry, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"org_id": "acme", "user_id": "alice"}
    if not entry.starts_task:
        base |= {"task_id": "task-1", "sequence": 3, "prev_hash": PREV_HASH}
    if not entry.in_history:
        base |= {"event_id": GIVEN_EVENT_ID}
    return base | overrides


def valid_data(entry: CatalogueEntry, **envelope: Any) -> dict[str, Any]:
    data: dict[str, Any] = _sample(parsed_schema(entry.fullname), _named(entry.fullname))
    data.pop("envelope", None)
    if entry.is_task_event:
        data["envelope"] = _envelope(entry, **envelope)
    return data


def _avro_type(field: dict[str, Any], entry: CatalogueEntry) -> Any:
    kind = field["type"]
    return _named(entry.fullname).get(kind, kind) if isinstance(kind, str) else kind


def problems_of(entry: CatalogueEntry | str, data: Any) -> list[FieldProblem]:
    name = entry if isinstance(entry, str) else entry.fullname
    with pytest.raises(EventValidationError) as caught:
        prepare(name, data, settings=SETTINGS, now=NOW, new_id=NEW_ID)
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return list(caught.value.problems)


def by_path(problems: list[FieldProblem]) -> dict[str, FieldProblem]:
    return {p.path: p for p in problems}


# -- topic resolution ------------------------------------------------------------------------


def test_every_catalogued_type_is_producible_on_the_topic_that_carries_it() -> None:
    carried = {
        name: spec for spec in CATALOGUE for name in spec.event_types if name != AuditSealed.fullname()
    }
    assert {e.fullname: e.topic for e in ENTRIES} == carried
    assert set(PAYLOAD_TYPES) | {RecordDeadLettered.fullname()} | set(REQUEST_TYPES) == set(carried)
    for fullname, spec in carried.items():
        assert resolve_event_type(fullname).topic is spec
        assert resolve_event_type(fullname.rsplit(".", 1)[-1]).fullname == fullname


def test_every_type_has_its_schemas_doc() -> None:
    for entry in ENTRIES:
        assert entry.doc == " ".join(parsed_schema(entry.fullname)["doc"].split())
        assert entry.doc


@pytest.mark.parametrize("name", ["Nope", "agentlog.events.Envelope", "taskSubmitted", "tasks.state", ""])
def test_a_type_no_topic_carries_is_refused_with_the_producible_ones(name: str) -> None:
    with pytest.raises(UnknownEventTypeError) as caught:
        prepare(name, {}, settings=SETTINGS, now=NOW, new_id=NEW_ID)
    message = str(caught.value)
    assert repr(name) in message
    for entry in ENTRIES:
        assert entry.name in message


# -- valid events of every type --------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_valid_data_of_every_type_is_encoded_for_its_topic(entry: CatalogueEntry) -> None:
    prepared = prepare(entry.name, valid_data(entry), settings=SETTINGS, now=NOW, new_id=NEW_ID)
    assert prepared.topic == entry.topic.name(SETTINGS)
    if isinstance(prepared.record, Event):
        assert decode_event(prepared.body, schema_json(entry.fullname)) == prepared.record
        assert prepared.key == prepared.record.task_id.encode()
        headers = dict(
            prepared.headers(source="unit-test", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
        )
        assert headers["ce_type"] == entry.fullname.encode()
        assert headers["ce_id"] == str(prepared.record.envelope.event_id).encode()
        assert headers["ce_subject"] == prepared.record.task_id.encode()
        assert headers["ce_source"] == b"unit-test"
    elif isinstance(prepared.record, TaskRequest):
        assert decode_request(prepared.body, schema_json(entry.fullname)) == prepared.record
        assert prepared.key == prepared.record.task_id.encode() and prepared.topic == REQUESTS.name(SETTINGS)
        headers = dict(prepared.headers(source="unit-test"))
        assert headers["ce_id"] == str(prepared.record.header.request_id).encode()
        assert headers["ce_subject"] == prepared.record.task_id.encode()
    else:
        assert decode_dead_letter(prepared.body, schema_json(entry.fullname)) == prepared.record
        assert prepared.headers(source="unit-test") == []


# -- envelope defaults -----------------------------------------------------------------------


def test_a_submission_gets_a_new_task_id_and_the_platforms_derived_ids() -> None:
    prepared = prepare(
        "TaskSubmitted",
        {"query": "What is 2 + 2?", "envelope": {"org_id": "acme", "user_id": "alice"}},
        settings=SETTINGS,
        now=NOW,
        new_id=NEW_ID,
    )
    assert isinstance(prepared.record, Event)
    envelope = prepared.record.envelope
    task_id = str(NEW_ID)
    assert envelope.task_id == task_id and prepared.task_id == task_id
    assert envelope.sequence == 0 and envelope.prev_hash is None and envelope.causation_id is None
    assert envelope.event_id == event_id_for(task_id, 0) == prepared.record_id
    assert envelope.correlation_id == task_id
    assert envelope.occurred_at == NOW.replace(microsecond=123000)
    assert (envelope.producer, envelope.producer_version) == (SDK_PRODUCER, SDK_VERSION)
    assert prepared.key == task_id.encode()
    assert prepared.topic == "unit.tasks.requests"
    assert prepared.record.payload == TaskSubmitted(query="What is 2 + 2?")


def test_given_envelope_fields_override_the_defaults() -> None:
    given = {
        "task_id": "billing-42",
        "event_id": "9a1d0c52-8f8e-4a43-9d2b-8c4c4b3e0d11",
        "correlation_id": "invoice-7",
        "causation_id": "upstream-1",
        "occurred_at": "2031-01-02T03:04:05.678+02:00",
        "producer": "billing-service",
        "producer_version": "7.1.0",
        "org_id": "acme",
        "user_id": "alice",
    }
    prepared = prepare(
        "agentlog.events.TaskSubmitted",
        {"query": "q", "envelope": given},
        settings=SETTINGS,
        now=NOW,
        new_id=NEW_ID,
    )
    assert isinstance(prepared.record, Event)
    envelope = prepared.record.envelope
    assert envelope.task_id == "billing-42" and prepared.key == b"billing-42"
    assert str(envelope.event_id) == given["event_id"]
    assert envelope.correlation_id == "invoice-7" and envelope.causation_id == "upstream-1"
    assert envelope.occurred_at == datetime(2031, 1, 2, 1, 4, 5, 678000, tzinfo=UTC)
    assert (envelope.producer, envelope.producer_version) == ("billing-service", "7.1.0")


def test_the_default_correlation_id_is_the_given_task_id() -> None:
    prepared = prepare(
        "TaskSubmitted",
        {"query": "q", "envelope": {"task_id": "t-9", "org_id": "o", "user_id": "u"}},
        settings=SETTINGS,
        now=NOW,
        new_id=NEW_ID,
    )
    assert isinstance(prepared.record, Event)
    assert prepared.record.envelope.correlation_id == "t-9"
    assert prepared.record.envelope.event_id == event_id_for("t-9", 0)


@pytest.mark.parametrize("entry", HISTORY_ENTRIES, ids=lambda e: e.name)
def test_an_event_continuing_a_history_gets_the_platforms_event_id(entry: CatalogueEntry) -> None:
    prepared = prepare(entry.name, valid_data(entry, sequence=7), settings=SETTINGS, now=NOW, new_id=NEW_ID)
    assert isinstance(prepared.record, Event)
    envelope = prepared.record.envelope
    assert (envelope.task_id, envelope.sequence, envelope.prev_hash) == ("task-1", 7, PREV_HASH)
    assert envelope.event_id == event_id_for("task-1", 7)
    assert prepared.topic == EVENTS.name(SETTINGS) and prepared.key == b"task-1"


@pytest.mark.parametrize("entry", OUTSIDE_HISTORY_ENTRIES, ids=lambda e: e.name)
def test_a_task_record_outside_the_history_keeps_its_given_ids(entry: CatalogueEntry) -> None:
    prepared = prepare(entry.name, valid_data(entry), settings=SETTINGS, now=NOW, new_id=NEW_ID)
    assert isinstance(prepared.record, Event)
    assert str(prepared.record.envelope.event_id) == GIVEN_EVENT_ID
    assert prepared.record.envelope.event_id != event_id_for("task-1", 3)
    assert prepared.topic == entry.topic.name(SETTINGS) and prepared.key == b"task-1"


def test_the_catalogue_has_types_before_in_and_outside_a_history() -> None:
    assert [e.topic for e in TASK_ENTRIES if e.starts_task] == [REQUESTS]
    assert EVENTS in [e.topic for e in HISTORY_ENTRIES]
    assert OUTSIDE_HISTORY_ENTRIES  # the checkpoints on the task-state topic, today


@pytest.mark.parametrize("entry", CONTINUING_ENTRIES, ids=lambda e: e.name)
def test_an_event_continuing_a_task_needs_its_task_id_and_sequence(entry: CatalogueEntry) -> None:
    data = valid_data(entry)
    data["envelope"] = {"org_id": "acme", "user_id": "alice"}
    found = by_path(problems_of(entry, data))
    required = ["task_id", "sequence"] + ([] if entry.in_history else ["event_id"])
    assert sorted(found) == sorted(f"{entry.name}.envelope.{field}" for field in required)
    for problem in found.values():
        assert problem.rule.startswith(f"required for an event on {entry.topic.name(SETTINGS)}: ")
        assert not problem.given


@pytest.mark.parametrize("entry", CONTINUING_ENTRIES, ids=lambda e: e.name)
def test_an_event_after_the_first_needs_the_previous_events_hash(entry: CatalogueEntry) -> None:
    data = valid_data(entry)
    del data["envelope"]["prev_hash"]
    [problem] = problems_of(entry, data)
    assert problem.path == f"{entry.name}.envelope.prev_hash"
    assert problem.rule.startswith("required for sequence > 0")
    # Sequence 0 has no previous event.
    zero = valid_data(entry, sequence=0)
    del zero["envelope"]["prev_hash"]
    assert prepare(entry.name, zero, settings=SETTINGS, now=NOW, new_id=NEW_ID).task_id == "task-1"


@pytest.mark.parametrize(
    ("override", "field", "rule"),
    [
        ({"sequence": 1}, "sequence", "must be 0: a submission is the first event of its task"),
        ({"prev_hash": PREV_HASH}, "prev_hash", "must be null: a submission is the first event of its task"),
    ],
)
def test_a_submission_starts_its_history(override: dict[str, Any], field: str, rule: str) -> None:
    entry = resolve_event_type(TaskSubmitted.fullname())
    [problem] = problems_of(entry, valid_data(entry, **override))
    assert (problem.path, problem.rule, problem.value) == (
        f"TaskSubmitted.envelope.{field}",
        rule,
        override[field],
    )


def test_a_dead_letter_is_keyed_by_its_source_position_with_defaults_for_id_and_time() -> None:
    data = {
        "source_topic": "agentlog.tasks.requests",
        "source_partition": 4,
        "source_offset": 1234,
        "value": "not avro",
        "error_type": "WireFormatError",
        "error": "unknown magic byte",
        "consumer": "billing-bridge",
    }
    prepared = prepare("RecordDeadLettered", data, settings=SETTINGS, now=NOW, new_id=NEW_ID)
    assert prepared.key == b"agentlog.tasks.requests/4/1234"
    assert prepared.topic == "unit.deadletter" and prepared.task_id is None
    assert isinstance(prepared.record, RecordDeadLettered)
    assert prepared.record.dead_letter_id == NEW_ID == prepared.record_id
    # As on the log: Avro's timestamp-millis.
    assert prepared.record.occurred_at == NOW.replace(microsecond=123000)
    assert prepared.record.value == b"not avro"


# -- errors name the field, the rule and the value -------------------------------------------


def test_the_error_names_field_rule_and_value() -> None:
    data = {"query": "q", "priority": "URGENT", "envelope": {"org_id": "acme", "user_id": "alice"}}
    with pytest.raises(EventValidationError) as caught:
        prepare("TaskSubmitted", data, settings=SETTINGS, now=NOW, new_id=NEW_ID)
    assert str(caught.value) == "TaskSubmitted.priority: must be one of HIGH, NORMAL, LOW (got 'URGENT')"
    assert caught.value.event_type == TaskSubmitted.fullname()
    assert caught.value.problems == (
        FieldProblem(path="TaskSubmitted.priority", rule="must be one of HIGH, NORMAL, LOW", value="URGENT"),
    )


def test_every_broken_field_is_reported_at_once() -> None:
    data = {
        "query": 5,
        "context": {"a": 1},
        "bogus": True,
        "envelope": {
            "org_id": "acme",
            "sequence": -1,
            "event_id": "nope",
            "occurred_at": "2030-01-01T00:00:00",
        },
    }
    found = by_path(problems_of("TaskSubmitted", data))
    assert str(found["TaskSubmitted.query"]) == "TaskSubmitted.query: must be a string (got 5)"
    assert str(found["TaskSubmitted.context.a"]) == "TaskSubmitted.context.a: must be a string (got 1)"
    assert found["TaskSubmitted.bogus"].rule.startswith("unknown field, not one of query, context")
    assert str(found["TaskSubmitted.envelope.user_id"]) == "TaskSubmitted.envelope.user_id: required"
    assert (
        str(found["TaskSubmitted.envelope.sequence"])
        == "TaskSubmitted.envelope.sequence: must be >= 0 (got -1)"
    )
    assert found["TaskSubmitted.envelope.event_id"].rule == "must be a UUID"
    assert "timezone-aware" in found["TaskSubmitted.envelope.occurred_at"].rule
    assert len(found) == 7


@pytest.mark.parametrize("data", [[1, 2], "text", 3, None])
def test_data_must_be_an_object(data: Any) -> None:
    [problem] = problems_of("TaskSubmitted", data)
    assert (problem.path, problem.value) == ("TaskSubmitted", data)


@pytest.mark.parametrize("envelope", [[1], "x", 5, None])
def test_the_envelope_must_be_an_object(envelope: Any) -> None:
    found = by_path(problems_of("TaskSubmitted", {"query": "q", "envelope": envelope}))
    assert found["TaskSubmitted.envelope"].rule == "must be an object"
    assert found["TaskSubmitted.envelope"].value == envelope


def test_a_dead_letter_has_no_envelope() -> None:
    entry = resolve_event_type("RecordDeadLettered")
    found = by_path(problems_of(entry, {**valid_data(entry), "envelope": {}}))
    assert found["RecordDeadLettered.envelope"].rule.startswith("unknown field")


_SPARE_KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=20)


@given(st.sampled_from(ENTRIES), st.lists(_SPARE_KEYS, min_size=1, max_size=4, unique=True), st.data())
def test_unknown_fields_are_named(entry: CatalogueEntry, keys: list[str], data: st.DataObject) -> None:
    known = set(entry.model.model_fields) | {"envelope"}
    extra = [k for k in keys if k not in known]
    value = data.draw(st.integers() | st.text(max_size=5) | st.none())
    found = by_path(problems_of(entry, {**valid_data(entry), **dict.fromkeys(extra, value)})) if extra else {}
    for key in extra:
        problem = found[f"{entry.name}.{key}"]
        assert problem.rule.startswith("unknown field, not one of ")
        assert problem.value == value and str(problem).endswith(f"(got {value!r})")
    assert len(found) == len(extra)


@given(st.sampled_from(ENTRIES), st.data())
def test_a_missing_required_field_is_named(entry: CatalogueEntry, data: st.DataObject) -> None:
    defaulted_by_the_sdk = (
        set()
        if entry.is_task_event
        else {"header"}
        if entry.is_request
        else {"dead_letter_id", "occurred_at"}
    )
    required = [
        f["name"] for f in _fields(entry) if "default" not in f and f["name"] not in defaulted_by_the_sdk
    ]
    if not required:
        return
    missing = data.draw(st.lists(st.sampled_from(required), min_size=1, unique=True))
    values = {k: v for k, v in valid_data(entry).items() if k not in missing}
    found = by_path(problems_of(entry, values))
    assert {path: str(p) for path, p in found.items()} == {
        f"{entry.name}.{name}": f"{entry.name}.{name}: required" for name in missing
    }


@given(st.sampled_from(TASK_ENTRIES), st.data())
def test_a_missing_envelope_field_without_default_is_named(
    entry: CatalogueEntry, data: st.DataObject
) -> None:
    field = data.draw(st.sampled_from(["org_id", "user_id"]))
    values = valid_data(entry)
    del values["envelope"][field]
    [problem] = problems_of(entry, values)
    assert str(problem) == f"{entry.name}.envelope.{field}: required"


def _fields_of_avro_type(avro_type: str) -> list[tuple[CatalogueEntry, str]]:
    return [(e, f["name"]) for e in ENTRIES for f in _fields(e) if _avro_type(f, e) == avro_type]


INT_FIELDS = _fields_of_avro_type("int")
LONG_FIELDS = _fields_of_avro_type("long")
STRING_FIELDS = _fields_of_avro_type("string")
ENUM_FIELDS = [
    (e, f["name"], _avro_type(f, e)["symbols"])
    for e in ENTRIES
    for f in _fields(e)
    if isinstance(_avro_type(f, e), dict) and _avro_type(f, e).get("type") == "enum"
]


def test_the_catalogue_has_fields_of_every_kind_the_properties_below_cover() -> None:
    assert INT_FIELDS and LONG_FIELDS and STRING_FIELDS and ENUM_FIELDS


@given(
    st.sampled_from(INT_FIELDS),
    st.integers(LONG_RANGE[0], INT_RANGE[0] - 1) | st.integers(INT_RANGE[1] + 1, LONG_RANGE[1]),
)
def test_a_number_beyond_an_avro_int_is_refused_with_its_field(
    field: tuple[CatalogueEntry, str], number: int
) -> None:
    entry, name = field
    [problem] = problems_of(entry, {**valid_data(entry), name: number})
    # The model carries the Avro int's bounds (schemas.events.Int32), so it refuses first.
    bound = "<= 2147483647" if number > 0 else ">= -2147483648"
    assert str(problem) == f"{entry.name}.{name}: must be {bound} (got {number})"


@given(
    st.sampled_from(LONG_FIELDS),
    st.integers(max_value=LONG_RANGE[0] - 1) | st.integers(min_value=LONG_RANGE[1] + 1),
)
def test_a_number_beyond_an_avro_long_is_refused_with_its_field(
    field: tuple[CatalogueEntry, str], number: int
) -> None:
    entry, name = field
    # A field with a lower bound in its model (e.g. ge=0) may refuse a negative number first.
    [problem] = problems_of(entry, {**valid_data(entry), name: number})
    assert problem.path == f"{entry.name}.{name}" and problem.value == number


@given(
    st.sampled_from(STRING_FIELDS),
    st.integers() | st.floats(allow_nan=False) | st.lists(st.integers(), max_size=2),
)
def test_a_string_field_refuses_other_json(field: tuple[CatalogueEntry, str], value: Any) -> None:
    entry, name = field
    [problem] = problems_of(entry, {**valid_data(entry), name: value})
    assert str(problem) == f"{entry.name}.{name}: must be a string (got {value!r})"


@given(st.sampled_from(ENUM_FIELDS), st.text(max_size=12))
def test_an_enum_field_names_its_symbols(field: tuple[CatalogueEntry, str, list[str]], value: str) -> None:
    entry, name, symbols = field
    if value in symbols:
        return
    [problem] = problems_of(entry, {**valid_data(entry), name: value})
    assert problem.path == f"{entry.name}.{name}"
    assert problem.rule == f"must be one of {', '.join(symbols)}"
    assert problem.value == value


@given(st.sampled_from(CONTINUING_ENTRIES), st.integers(max_value=-1))
def test_a_negative_sequence_is_refused(entry: CatalogueEntry, sequence: int) -> None:
    [problem] = problems_of(entry, valid_data(entry, sequence=sequence))
    assert str(problem) == f"{entry.name}.envelope.sequence: must be >= 0 (got {sequence})"


@given(st.text(min_size=200, max_size=300))
def test_a_long_offending_value_is_shortened_in_the_message(value: str) -> None:
    problem = FieldProblem(path="TaskSubmitted.query", rule="must be a string", value=value)
    shown = str(problem).removeprefix("TaskSubmitted.query: must be a string (got ").removesuffix(")")
    assert len(shown) == 80 and shown.endswith("...") and repr(value).startswith(shown[:-3])


# -- the CLI's offline paths (listing, dry run, errors): no Kafka, no registry ---------------

runner = CliRunner()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_cli_lists_every_producible_type_with_its_topic() -> None:
    result = runner.invoke(app, ["produce", "--list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["full_name"], r["doc"]) for r in rows] == [(e.fullname, e.doc) for e in ENTRIES]
    assert {r["topic"] for r in rows} == {e.topic.name(Settings()) for e in ENTRIES}


def test_cli_dry_run_shows_the_record_and_produces_nothing() -> None:
    data = {"query": "What is 2 + 2?", "envelope": {"task_id": "dry-1", "org_id": "acme", "user_id": "alice"}}
    result = runner.invoke(
        app, ["produce", "TaskSubmitted", "--data", json.dumps(data), "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    settings = Settings()
    assert shown["topic"] == REQUESTS.name(settings) and shown["key"] == "dry-1"
    assert shown["partition"] == partition_for("dry-1", settings.topic_partitions)
    assert shown["subject"] == f"{REQUESTS.name(settings)}-{TaskSubmitted.fullname()}"
    assert shown["event_id"] == str(event_id_for("dry-1", 0)) == shown["headers"]["ce_id"]
    assert shown["headers"]["ce_type"] == TaskSubmitted.fullname()
    assert shown["value"]["query"] == "What is 2 + 2?" and shown["value"]["envelope"]["sequence"] == 0


def test_cli_reads_data_from_a_file_and_stdin(tmp_path: Any) -> None:
    data = json.dumps({"query": "q", "envelope": {"task_id": "f-1", "org_id": "o", "user_id": "u"}})
    path = tmp_path / "event.json"
    path.write_text(data)
    from_file = runner.invoke(app, ["produce", "TaskSubmitted", "--data", f"@{path}", "--dry-run", "--json"])
    from_stdin = runner.invoke(
        app, ["produce", "TaskSubmitted", "--data", "@-", "--dry-run", "--json"], input=data
    )
    for result in (from_file, from_stdin):
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["key"] == "f-1"


def test_cli_prints_one_error_per_broken_field_and_exits_1() -> None:
    data = {"query": "q", "priority": "URGENT", "bogus": 1, "envelope": {"org_id": "acme"}}
    result = runner.invoke(app, ["produce", "TaskSubmitted", "--data", json.dumps(data), "--dry-run"])
    assert result.exit_code == 1
    errors = _one_line(result.stderr).split("error: ")[1:]
    assert [e.strip() for e in errors][:2] == [
        "TaskSubmitted.envelope.user_id: required",
        "TaskSubmitted.priority: must be one of HIGH, NORMAL, LOW (got 'URGENT')",
    ]
    assert errors[2].startswith("TaskSubmitted.bogus: unknown field") and len(errors) == 3
    assert result.stdout == ""


def test_cli_json_errors_carry_the_problems() -> None:
    data = {"query": "q", "priority": "URGENT", "envelope": {"org_id": "acme", "user_id": "alice"}}
    result = runner.invoke(app, ["produce", "TaskSubmitted", "--data", json.dumps(data), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["problems"] == [
        {
            "path": "TaskSubmitted.priority",
            "rule": "must be one of HIGH, NORMAL, LOW",
            "value": "URGENT",
            "given": True,
        }
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["produce", "TaskSubmitted", "--data", "{bad"], "--data is not valid JSON"),
        (["produce", "TaskSubmitted", "--data", "@/nonexistent/event.json"], "No such file or directory"),
        (
            ["produce", "Nope", "--data", "{}"],
            "no topic carries event type 'Nope'; producible types: TaskSubmitted",
        ),
        (["produce", "TaskSubmitted"], "give an EVENT_TYPE and --data"),
        (["produce"], "give an EVENT_TYPE and --data"),
    ],
)
def test_cli_refuses_bad_arguments_in_one_red_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in _one_line(result.stderr)


def test_cli_dry_run_validates_times_against_now() -> None:
    # The default occurred_at is now: a dry run twice a few ms apart differs only in time-derived fields.
    data = json.dumps({"query": "q", "envelope": {"task_id": "t", "org_id": "o", "user_id": "u"}})
    shown = json.loads(
        runner.invoke(app, ["produce", "TaskSubmitted", "--data", data, "--dry-run", "--json"]).stdout
    )
    occurred = datetime.fromisoformat(shown["value"]["envelope"]["occurred_at"])
    assert abs(datetime.now(UTC) - occurred) < timedelta(seconds=30)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.is_request], ids=lambda e: e.name)
def test_a_request_names_each_missing_header_field_and_defaults_the_rest(entry: CatalogueEntry) -> None:
    found = by_path(problems_of(entry, {k: v for k, v in valid_data(entry).items() if k != "header"}))
    assert {path: str(p) for path, p in found.items()} == {
        f"{entry.name}.header.{name}": f"{entry.name}.header.{name}: required"
        for name in ("task_id", "org_id", "user_id")
    }
    data = valid_data(entry) | {"header": {"task_id": "t-1", "org_id": "acme", "user_id": "bob"}}
    prepared = prepare(entry.name, data, settings=SETTINGS, now=NOW, new_id=NEW_ID)
    assert isinstance(prepared.record, TaskRequest)
    header = prepared.record.header
    assert (header.request_id, header.issued_at, header.producer) == (
        NEW_ID,
        NOW.replace(microsecond=123000),
        SDK_PRODUCER,
    )
    assert prepared.key == b"t-1"
