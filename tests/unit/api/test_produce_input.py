"""Hostile input to ``agentlog produce``: generated JSON bodies (wrong types, missing and extra fields,
huge integers, bad enums, UUIDs and timestamps, NUL bytes, lone surrogates) and text that is not
JSON at all.

Properties: :func:`streams.sdk.prepare` (what the CLI validates and builds the record with) either
returns a record that decodes back to itself or raises ``EventValidationError`` /
``UnknownEventTypeError``, each problem one line naming its field; :func:`api.cli.parse_event_data`
turns any text into JSON or a one-line ``ValueError``; and the command itself (``--dry-run``, so
neither Kafka nor the registry is involved) exits 0 or 1 with ``error:`` lines, never a traceback.
What reaches Kafka, and that nothing does for bad input, is tests/integration/test_produce.py.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from api.cli import app, parse_event_data
from schemas.events import Event
from schemas.requests import TaskRequest
from schemas.serde import decode_dead_letter, decode_event, decode_request, schema_json
from streams.sdk import EventValidationError, UnknownEventTypeError, prepare, resolve_event_type
from streams.settings import Settings

SETTINGS = Settings()
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
runner = CliRunner()


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=timedelta(seconds=10),  # shared machine; the property is about errors, not speed
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- generated bodies --------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec=None, categories=None), max_size=12)  # NUL and lone surrogates too
_INTS = st.one_of(
    st.integers(-5, 5), st.integers(-(2**70), 2**70), st.sampled_from([2**31, 2**63, -(2**63) - 1])
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | _INTS | st.floats(allow_nan=True, allow_infinity=True) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
BAD_UUIDS = st.sampled_from(["", "not-a-uuid", "00000000-0000-0000-0000-00000000000g", "\x00" * 36, "1" * 37])
BAD_TIMES = st.sampled_from(
    [
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-05-01T12:00:00",  # no time zone
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-23:59",
        "2026-05-01T25:61:00Z",
        "\x00",
    ]
)
PLAUSIBLE = {
    "query": st.text(max_size=20),
    "context": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    "priority": st.sampled_from(["HIGH", "NORMAL", "LOW", "URGENT", "high", ""]),
    "session_id": st.none() | st.text(max_size=8),
    "idempotency_key": st.none() | st.text(max_size=8),
    "not_before": st.none() | st.just("2026-05-01T12:00:00Z") | BAD_TIMES,
    "token_budget": st.none() | _INTS,
    "user_role": st.none() | st.sampled_from(["viewer", "operator", "admin"]),
    "reason": st.text(max_size=10),
    "approval_id": st.text(max_size=10),
    "approved": st.booleans(),
    "source_task_id": st.text(max_size=10),
    "prefix_events": _INTS,
    "step": _INTS,
    "idempotency_key_": st.text(max_size=5),
    "provider": st.text(max_size=5),
    "model": st.text(max_size=5),
    "error_type": st.text(max_size=5),
    "error": st.text(max_size=5),
    "latency_ms": st.floats(allow_nan=True),
    "source_topic": st.text(max_size=5),
    "source_partition": _INTS,
    "source_offset": _INTS,
    "consumer": st.text(max_size=5),
    "dead_letter_id": st.uuids().map(str) | BAD_UUIDS,
    "occurred_at": st.just("2026-05-01T12:00:00Z") | BAD_TIMES,
}
ENVELOPE = {
    "org_id": st.text(max_size=8),
    "user_id": st.text(max_size=8),
    "task_id": st.text(max_size=8),
    "sequence": _INTS,
    "event_id": st.uuids().map(str) | BAD_UUIDS,
    "occurred_at": st.just("2026-05-01T12:00:00Z") | BAD_TIMES,
    "prev_hash": st.none() | st.text("0123456789abcdef", min_size=64, max_size=64) | st.text(max_size=5),
    "causation_id": st.none() | st.text(max_size=5),
}
HEADER = {**ENVELOPE, "request_id": st.uuids().map(str) | BAD_UUIDS, "issued_at": ENVELOPE["occurred_at"]}
# Each generated body is for one of these; random names try the unknown-type error too.
EVENT_TYPES = st.sampled_from(
    [
        "TaskSubmitted",
        "agentlog.events.TaskSubmitted",
        "CancellationRequested",
        "ApprovalDecided",
        "TaskForkRequested",
        "LlmCallFailed",
        "RecordDeadLettered",
    ]
) | st.text(max_size=20)


@st.composite
def fields_of(draw: st.DrawFn, spec: dict[str, st.SearchStrategy[Any]]) -> Any:
    """Some of ``spec``'s fields (plausible or any JSON value) and unknown ones; sometimes no object."""
    if draw(st.integers(0, 19)) == 0:
        return draw(JSON_VALUES)  # not an object at all
    chosen = draw(st.lists(st.sampled_from(sorted(spec)), unique=True, max_size=len(spec)))
    body = {name: draw(spec[name] if draw(st.integers(0, 3)) else JSON_VALUES) for name in chosen}
    unknown = st.sampled_from(["org", "org_id", "role", "\x00", "bogus", "", "a.b", "x\ny"]) | _TEXT
    extra = draw(st.dictionaries(unknown, JSON_VALUES, max_size=2))
    return {**extra, **body}


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    body = draw(fields_of(PLAUSIBLE))
    if isinstance(body, dict) and draw(st.booleans()):
        body["envelope"] = draw(fields_of(ENVELOPE))
    if isinstance(body, dict) and draw(st.booleans()):
        body["header"] = draw(fields_of(HEADER))
    return body


def _one_line_naming(problem: str, name: str) -> None:
    assert "\n" not in problem and "\r" not in problem, problem
    # The record's short name, then the field's path (or the record itself when the body is no object).
    assert problem.startswith(f"{name}.") or problem.startswith(f"{name}:"), problem


def _check_prepared(event_type: str, data: Any) -> None:
    try:
        prepared = prepare(event_type, data, settings=SETTINGS, now=NOW, new_id=uuid.UUID(int=1))
    except UnknownEventTypeError as exc:
        assert "\n" not in str(exc) and repr(event_type) in str(exc)
        return
    except EventValidationError as exc:
        assert exc.problems, "an EventValidationError names at least one problem"
        name = resolve_event_type(event_type).name
        for problem in exc.problems:
            _one_line_naming(str(problem), name)
        return
    # Accepted: the body is the record, as a consumer will read it.
    fullname = prepared.entry.fullname
    record = prepared.record
    if isinstance(record, Event):
        assert decode_event(prepared.body, schema_json(fullname)) == record
    elif isinstance(record, TaskRequest):
        assert decode_request(prepared.body, schema_json(fullname)) == record
    else:
        assert decode_dead_letter(prepared.body, schema_json(fullname)) == record


@fuzz(800)
@given(EVENT_TYPES, bodies())
def test_generated_bodies_build_a_record_or_name_each_bad_field(event_type: str, data: Any) -> None:
    _check_prepared(event_type, data)


@fuzz(400)
@given(bodies())
def test_a_submission_is_built_or_refused_naming_the_field(data: Any) -> None:
    # The submission is what other systems produce most; its envelope is required.
    if isinstance(data, dict):
        data.setdefault("query", "What is 1 + 1?")
    _check_prepared("TaskSubmitted", data)


# -- text that may not be JSON -------------------------------------------------------------------

TEXTS = st.one_of(
    st.text(st.characters(codec=None, categories=None), max_size=60),
    JSON_VALUES.map(lambda value: json.dumps(value, allow_nan=True)),
    bodies().map(lambda value: json.dumps(value, allow_nan=True)),
    st.sampled_from(
        [
            "1" * 5000,  # past Python's integer-conversion limit: a ValueError that is no JSONDecodeError
            "[" * 100_000,  # deeper than the recursion limit
            '{"query": "x"',
            "\x00",
            '{"query": "\\u0000"}',
            "NaN",
            "",
        ]
    ),
)


@fuzz(600)
@given(TEXTS)
def test_any_text_is_json_or_one_line_saying_it_is_not(text: str) -> None:
    try:
        parse_event_data(text)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith("--data is not valid JSON: ") and "\n" not in message, message


@fuzz(120)
@given(EVENT_TYPES, TEXTS)
def test_the_command_exits_1_with_error_lines_never_a_traceback(event_type: str, text: str) -> None:
    # Real stdin is bytes: a lone surrogate arrives as the invalid UTF-8 it would be written as.
    stdin = text.encode("utf-8", errors="surrogatepass")
    result = runner.invoke(app, ["produce", "--dry-run", "--data", "@-", "--", event_type], input=stdin)
    assert result.exit_code in (0, 1), (result.exit_code, result.output)
    # A clean exit is SystemExit (or none); anything else escaped the command.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 1:
        assert result.stdout == ""
        lines = " ".join(result.stderr.split()).split("error: ")
        assert lines[0] == "" and len(lines) > 1, result.stderr
        assert "Traceback" not in result.stderr
    else:
        assert result.stdout.startswith("dry run, nothing produced:"), result.stdout


def test_non_utf8_data_is_one_error_line() -> None:
    result = runner.invoke(app, ["produce", "TaskSubmitted", "--data", "@-"], input=b'{"query": "\xff"}')
    assert result.exit_code == 1
    assert " ".join(result.stderr.split()) == "error: @-: not UTF-8 text (invalid start byte at byte 11)"


def test_a_lone_surrogate_is_refused_naming_its_field() -> None:
    data = {"query": "ok", "context": {"k": "\ud800"}, "envelope": {"org_id": "a\udfff", "user_id": "u"}}
    result = runner.invoke(app, ["produce", "TaskSubmitted", "--dry-run", "--data", json.dumps(data)])
    assert result.exit_code == 1
    errors = " ".join(result.stderr.split()).split("error: ")[1:]
    assert [e.split(":")[0] for e in errors] == ["TaskSubmitted.envelope.org_id", "TaskSubmitted.context.k"]
