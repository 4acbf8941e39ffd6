"""Log lines of every agentlog process: one JSON object a line, naming the task, org and trace.

The shells bind the task they are handling (:func:`bind_task`, :func:`task_context`); every line
logged meanwhile, by any module, carries ``task_id``, ``org_id`` and ``trace_id``. The trace id is
the current span's while tracing is on, else the one in the handled record's ``traceparent``, so
logs of one task can be joined across processes even with tracing off. Context variables follow
asyncio tasks: a task's run binds once and its LLM and tool calls inherit the binding.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from opentelemetry import trace

from streams import tracing

# (task id, org id, traceparent) in one variable: one set per bound record, not three.
_Bound = tuple[str | None, str | None, str | None]
_NOTHING: _Bound = (None, None, None)
_bound: ContextVar[_Bound] = ContextVar("agentlog_task", default=_NOTHING)

# The HTTP clients log every request at INFO: a line per LLM call is noise and measurable CPU.
NOISY_LOGGERS = ("httpx", "httpx2", "openai", "elastic_transport")


def bind_task(task_id: str | None, org_id: str | None = None, traceparent: str | None = None) -> None:
    """Name the task (and its org and trace) on every line this asyncio task logs from now on."""
    _bound.set((task_id, org_id, traceparent))


class task_context:
    """As :func:`bind_task`, for the lines logged inside the block only.

    A class, not a generator context manager: the processor enters one per record, and this costs
    a fraction as much.
    """

    __slots__ = ("_bound", "_token")

    def __init__(
        self, task_id: str | None, org_id: str | None = None, traceparent: str | None = None
    ) -> None:
        self._bound: _Bound = (task_id, org_id, traceparent)

    def __enter__(self) -> None:
        self._token = _bound.set(self._bound)

    def __exit__(self, *_: object) -> None:
        _bound.reset(self._token)


def current_trace_id() -> str | None:
    """The current span's trace id, else the bound record's; None if neither is known."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return trace.format_trace_id(span_context.trace_id)
    # Parsed only when a line is written: binding a record costs a context-variable set.
    return tracing.trace_id_of(_bound.get()[2])


class JsonFormatter(logging.Formatter):
    """``{"timestamp", "level", "logger", "message", "component", "task_id", "org_id", "trace_id"}``,
    plus ``exception`` when one is logged; context fields only where known."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self._component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "component": self._component,
        }
        task_id, org_id, _ = _bound.get()
        if task_id is not None:
            line["task_id"] = task_id
        if org_id is not None:
            line["org_id"] = org_id
        trace_id = current_trace_id()
        if trace_id is not None:
            line["trace_id"] = trace_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, with the task and trace appended where known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        task_id, trace_id = _bound.get()[0], current_trace_id()
        if task_id is None and trace_id is None:
            return text
        return f"{text} [task={task_id or '-'} trace={trace_id or '-'}]"


def parse_levels(spec: str) -> tuple[str, dict[str, str]]:
    """``"INFO"`` or ``"INFO,processors=DEBUG,streams.consumer=DEBUG"``: the root level and
    per-logger levels (so one package can log at DEBUG without every library doing so)."""
    root, levels = "INFO", {}
    for part in filter(None, (item.strip() for item in spec.split(","))):
        name, sep, level = part.partition("=")
        if sep:
            levels[name.strip()] = _level(level)
        else:
            root = _level(name)
    return root, levels


def _level(name: str) -> str:
    level = name.strip().upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ValueError(f"unknown log level {name!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def configure_logging(
    component: str, *, format: Literal["json", "text"] = "json", level: str = "INFO"
) -> None:
    """Send every logger's lines to stderr as ``format``, replacing handlers set up before;
    ``level`` as :func:`parse_levels` reads it."""
    root, levels = parse_levels(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component) if format == "json" else TextFormatter())
    logging.basicConfig(level=root, handlers=[handler], force=True)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name, named_level in levels.items():
        logging.getLogger(name).setLevel(named_level)
