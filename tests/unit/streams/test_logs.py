"""streams/logs.py: JSON log lines name the component, and the task, org and trace where known."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider

from streams import tracing
from streams.logs import JsonFormatter, TextFormatter, bind_task, parse_levels, task_context

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _record(message: str = "hello %s", *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad value 7")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("processors.task.worker", logging.INFO, __file__, 1, message, args, exc_info)


def _line(record: logging.LogRecord) -> dict[str, object]:
    parsed = orjson.loads(JsonFormatter("processor").format(record))
    assert isinstance(parsed, dict)
    return parsed


@pytest.fixture
def sdk() -> Iterator[None]:
    tracing.install(TracerProvider())
    try:
        yield
    finally:
        tracing.uninstall()


def test_a_line_outside_a_task_has_the_base_fields_only() -> None:
    line = _line(_record("hello %s", "world"))
    assert line.keys() == {"timestamp", "level", "logger", "message", "component"}
    assert line["message"] == "hello world"
    assert line["level"] == "INFO"
    assert line["logger"] == "processors.task.worker"
    assert line["component"] == "processor"
    assert str(line["timestamp"]).endswith("+00:00")


def test_a_line_inside_a_task_names_task_org_and_the_records_trace_with_tracing_off() -> None:
    with task_context("task-1", "acme", TRACEPARENT):
        line = _line(_record())
    assert (line["task_id"], line["org_id"], line["trace_id"]) == ("task-1", "acme", TRACE_ID)
    after = _line(_record())
    assert "task_id" not in after and "trace_id" not in after


def test_the_current_spans_trace_wins_over_the_bound_record(sdk: None) -> None:
    with (
        tracing.span("task run", TRACEPARENT),
        task_context("task-1", None, "00-" + "1" * 32 + "-" + "2" * 16 + "-01"),
    ):
        line = _line(_record())
    assert line["trace_id"] == TRACE_ID
    assert "org_id" not in line


def test_an_invalid_traceparent_gives_no_trace_id() -> None:
    with task_context("task-1", "acme", "not-a-traceparent"):
        line = _line(_record())
    assert "trace_id" not in line and line["task_id"] == "task-1"


async def test_bind_task_holds_for_the_asyncio_task_that_binds_it_only() -> None:
    import asyncio

    async def run() -> dict[str, object]:
        bind_task("task-2", "acme", TRACEPARENT)
        await asyncio.sleep(0)
        return _line(_record())

    line = await asyncio.create_task(run())
    assert line["task_id"] == "task-2" and line["trace_id"] == TRACE_ID
    assert "task_id" not in _line(_record())


def test_exceptions_are_kept_in_the_line() -> None:
    line = _line(_record("failed", exc=True))
    assert "ValueError: bad value 7" in str(line["exception"])


def test_text_lines_append_task_and_trace_where_known() -> None:
    formatter = TextFormatter()
    assert "[task=" not in formatter.format(_record())
    with task_context("task-1", "acme", TRACEPARENT):
        assert formatter.format(_record()).endswith(f"[task=task-1 trace={TRACE_ID}]")


def test_levels_per_logger() -> None:
    assert parse_levels("INFO") == ("INFO", {})
    assert parse_levels("warning,processors=debug, streams.consumer=DEBUG") == (
        "WARNING",
        {"processors": "DEBUG", "streams.consumer": "DEBUG"},
    )
    with pytest.raises(ValueError, match="LOUD"):
        parse_levels("LOUD")
