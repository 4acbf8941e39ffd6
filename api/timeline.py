"""A task's timeline as JSON rows (``agentlog replay --json``); the rows come from
:func:`audit.timetravel.timeline`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from audit.timetravel import timeline
from schemas.events import Event


def timeline_rows(events: Sequence[Event]) -> list[dict[str, Any]]:
    """One JSON object per event: sequence, type, step, agent, model/tool, tokens, cost, latency and
    the time since the previous event (see :class:`audit.timetravel.TimelineRow`)."""
    # isoformat, not pydantic's "Z": the rows keep the shape `agentlog replay --json` always had.
    return [
        {**row.model_dump(mode="json"), "occurred_at": row.occurred_at.isoformat()}
        for row in timeline(events)
    ]
