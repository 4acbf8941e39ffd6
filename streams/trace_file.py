"""``AGENTLOG_TRACE_FILE``: finished spans as JSON lines, for operators without a collector (and
for tests, which read the spans of the platform's separate processes from it)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span to a file as one JSON object a line (``AGENTLOG_TRACE_FILE``).

    Several processes may share the file: each line is one ``write`` to a file opened for
    appending, which the kernel keeps whole.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for finished in spans:
                os.write(self._fd, orjson.dumps(span_record(finished)) + b"\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_record(finished: ReadableSpan) -> dict[str, Any]:
    """A finished span as a flat JSON-able record (ids in W3C hex)."""
    ctx = finished.context
    parent = finished.parent
    return {
        "name": finished.name,
        "trace_id": trace.format_trace_id(ctx.trace_id) if ctx else None,
        "span_id": trace.format_span_id(ctx.span_id) if ctx else None,
        "parent_span_id": trace.format_span_id(parent.span_id) if parent else None,
        "kind": finished.kind.name,
        "service": finished.resource.attributes.get("service.name"),
        "start_ns": finished.start_time,
        "end_ns": finished.end_time,
        "status": finished.status.status_code.name,
        "attributes": dict(finished.attributes or {}),
        "links": [
            {
                "trace_id": trace.format_trace_id(link.context.trace_id),
                "span_id": trace.format_span_id(link.context.span_id),
            }
            for link in finished.links
        ],
    }
