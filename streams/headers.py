"""Kafka headers of every event: CloudEvents Kafka binding (binary mode) and W3C trace context."""

from __future__ import annotations

import secrets

from schemas.events import Event
from schemas.requests import TaskRequest

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/avro"


def new_traceparent() -> str:
    """A fresh W3C ``traceparent`` (version 00, sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def event_headers(
    event: Event | TaskRequest, *, source: str, traceparent: str | None = None
) -> list[tuple[str, bytes]]:
    """``ce_*`` headers describing ``event`` (or a request), plus ``traceparent`` (continued or new)."""
    if isinstance(event, TaskRequest):
        ce_id, ce_type, at = event.header.request_id, event.fullname(), event.header.issued_at
    else:
        ce_id, ce_type, at = event.envelope.event_id, event.payload.fullname(), event.envelope.occurred_at
    values = {
        "ce_specversion": SPEC_VERSION,
        "ce_id": str(ce_id),
        "ce_type": ce_type,
        "ce_source": source,
        "ce_time": at.isoformat().replace("+00:00", "Z"),
        "ce_subject": event.task_id,
        "content-type": CONTENT_TYPE,
        "traceparent": traceparent or new_traceparent(),
    }
    return [(name, value.encode()) for name, value in values.items()]


def header_map(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] | None) -> dict[str, str]:
    """Headers as text (undecodable values as hex), for logs and dead-letter records."""
    result: dict[str, str] = {}
    for name, value in headers or ():
        try:
            result[name] = value.decode() if value is not None else ""
        except UnicodeDecodeError:
            result[name] = value.hex()
    return result
