"""A task's history read from the log for an API request, without scanning its whole partition when
the read model knows where the task begins."""

from __future__ import annotations

from datetime import timedelta

from fastapi import HTTPException, status

from api.deps import Resources
from schemas.events import Event
from streams.history import TaskNotFoundError, read_task_events

# Clock slack between the process that stamped the submission and the broker's record times.
_SLACK = timedelta(minutes=1)


async def task_history(resources: Resources, task_id: str) -> list[Event]:
    """Every event of ``task_id``, ordered by sequence; [] when the log has none.

    With the submission time from the read model, the log is read from shortly before it (one
    ``offsets_for_times`` seek instead of a scan of the partition from offset 0). The result is
    used only if it is the whole history (sequences 0..n-1 without a gap); otherwise, e.g. a read
    model behind or a record time far off, the partition is scanned from the start.
    """
    settings, codec = resources.settings, resources.producer.codec
    view = await resources.queries.task(task_id)
    try:
        if view is not None and view.submitted_at is not None:
            events = await read_task_events(settings, codec, task_id, since=view.submitted_at - _SLACK)
            if [event.sequence for event in events] == list(range(len(events))) and events:
                return events
        return await read_task_events(settings, codec, task_id)
    except TaskNotFoundError:
        return []


async def task_history_of_org(resources: Resources, task_id: str, org_id: str) -> list[Event]:
    """:func:`task_history` of a task of ``org_id``, read from the log (not the read model, so a task
    that just ended is found); 404 when the log has none, or it is another org's (the same answer:
    its existence is not disclosed)."""
    events = await task_history(resources, task_id)
    if not events or events[0].envelope.org_id != org_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"task {task_id} not found")
    return events
