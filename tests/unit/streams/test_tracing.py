"""streams/tracing.py: traceparent headers in and out through OpenTelemetry's propagator, spans
continued from them when tracing is on, and nothing but the header handed on when it is off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streams import tracing
from streams.headers import new_traceparent
from streams.trace_file import JsonLinesSpanExporter

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.install(provider)
    try:
        yield spans
    finally:
        tracing.uninstall()


def test_off_a_span_hands_the_incoming_traceparent_on_unchanged() -> None:
    assert not tracing.enabled()
    with tracing.span("task run", TRACEPARENT) as handed_on:
        assert handed_on == TRACEPARENT
        assert tracing.current_traceparent() is None
    with tracing.span("task run", None) as handed_on:
        assert handed_on is None
    assert tracing.start_span("projector write", TRACEPARENT) is None


def test_on_a_span_continues_the_header_and_hands_on_its_own(exporter: InMemorySpanExporter) -> None:
    with tracing.span("task run", TRACEPARENT) as handed_on:
        assert handed_on is not None and handed_on != TRACEPARENT
        assert tracing.current_traceparent() == handed_on
        with tracing.span("llm call") as inner:
            assert inner is not None
    spans = {span.name: span for span in exporter.get_finished_spans()}
    run, call = spans["task run"], spans["llm call"]
    assert f"{run.context.trace_id:032x}" == TRACE_ID
    assert run.parent is not None and f"{run.parent.span_id:016x}" == SPAN_ID
    assert call.parent is not None and call.parent.span_id == run.context.span_id
    assert call.context.trace_id == run.context.trace_id
    # The handed-on header names the new span, in the same trace: extract(inject(span)) is span.
    assert handed_on == f"00-{TRACE_ID}-{run.context.span_id:016x}-01"
    assert tracing.trace_id_of(inner) == TRACE_ID


def test_started_span_continues_the_header_and_is_not_current(exporter: InMemorySpanExporter) -> None:
    span = tracing.start_span("projector-postgres write", TRACEPARENT)
    assert span is not None
    assert tracing.inject() is None  # not made current
    span.end()
    [finished] = exporter.get_finished_spans()
    assert f"{finished.context.trace_id:032x}" == TRACE_ID


@pytest.mark.parametrize(
    "value",
    [None, "", "garbage", f"00-{'0' * 32}-{SPAN_ID}-01", f"00-{TRACE_ID}-{'0' * 16}-01", f"zz-{TRACE_ID}"],
)
def test_invalid_traceparents_continue_nothing(value: str | None, exporter: InMemorySpanExporter) -> None:
    assert tracing.context_of(value) is None
    assert tracing.trace_id_of(value) is None
    assert tracing.link_to(value) is None
    with tracing.span("task run", value):
        pass
    [finished] = exporter.get_finished_spans()
    assert finished.parent is None  # a new trace, not a broken one


def test_trace_id_and_link_of_a_valid_header() -> None:
    fresh = new_traceparent()
    assert tracing.trace_id_of(fresh) == fresh.split("-")[1]
    link = tracing.link_to(TRACEPARENT)
    assert link is not None and f"{link.context.span_id:016x}" == SPAN_ID


def test_traceparent_from_kafka_headers_and_mappings() -> None:
    pairs = [("ce_id", b"1"), ("traceparent", TRACEPARENT.encode()), ("content-type", b"x")]
    assert tracing.traceparent_from(pairs) == TRACEPARENT
    assert tracing.traceparent_from([("ce_id", b"1")]) is None
    assert tracing.traceparent_from(None) is None
    assert tracing.traceparent_from({"traceparent": TRACEPARENT}) == TRACEPARENT


def test_trace_file_exporter_writes_one_json_line_per_span(tmp_path: Path) -> None:
    path = tmp_path / "spans" / "trace.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracing.install(provider)
    try:
        with tracing.span("task run", TRACEPARENT, attributes={"agentlog.task_id": "t-1"}):
            pass
        with tracing.span("task decision", TRACEPARENT):
            pass
    finally:
        tracing.uninstall()
        provider.shutdown()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["name"] for line in lines] == ["task run", "task decision"]
    assert {line["trace_id"] for line in lines} == {TRACE_ID}
    assert {line["parent_span_id"] for line in lines} == {SPAN_ID}
    assert lines[0]["attributes"] == {"agentlog.task_id": "t-1"}
