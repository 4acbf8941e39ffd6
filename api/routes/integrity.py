"""A task's tamper check and its export over HTTP (``agentlog verify`` / ``export``; docs/audit.md).

Both read the task's events from the log (not the read models); any authenticated caller of the
task's org may call them.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse

from api.deps import CallerDep, ResourcesDep
from api.routes.tasks import _task_of_org
from audit.export import ExportedEvent, ExportFormat, ExportWriter
from audit.log import ReadStats, read_events
from audit.verify import TaskVerdict
from audit.verify_log import verify_log
from streams.history import TaskNotFoundError

router = APIRouter(prefix="/v1/tasks", tags=["audit"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such task in the caller's org"}}
_CHUNK_BYTES = 64 * 1024


class ExportFormatParam(StrEnum):
    jsonl = "jsonl"
    avro = "avro"


_MEDIA_TYPES = {ExportFormat.jsonl: "application/x-ndjson", ExportFormat.avro: "application/avro"}


@router.get(
    "/{task_id}/verify",
    response_model=TaskVerdict,
    operation_id="verify_task",
    summary="Check the task's hash chain and sequences on the log; its first broken link, if any",
    responses=_NOT_FOUND,
)
async def verify_task(task_id: str, resources: ResourcesDep, caller: CallerDep) -> TaskVerdict:
    await _task_of_org(resources, task_id, caller.org_id)
    try:
        report = await verify_log(resources.settings, resources.producer.codec, task_id=task_id)
    except TaskNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return report.tasks[0]


class _Buffer(io.RawIOBase):
    """A file the export writer writes to; the response takes what it holds, chunk by chunk."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self.size += len(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self.size = 0
        return data


@router.get(
    "/{task_id}/export",
    operation_id="export_task",
    summary="The task's events as an export file (Avro object container or JSON lines), streamed",
    response_class=StreamingResponse,
    responses={
        **_NOT_FOUND,
        200: {
            "description": "The export file (`agentlog import` loads it)",
            "content": {"application/x-ndjson": {}, "application/avro": {}},
        },
    },
)
async def export_task(
    task_id: str,
    resources: ResourcesDep,
    caller: CallerDep,
    format: Annotated[ExportFormatParam, Query(description="jsonl or avro")] = ExportFormatParam.jsonl,
) -> StreamingResponse:
    await _task_of_org(resources, task_id, caller.org_id)
    fmt = ExportFormat(format.value)
    settings, codec = resources.settings, resources.producer.codec
    scope = {"topic_prefix": settings.topic_prefix, "task_id": task_id, "org": None, "since": None}

    async def body() -> AsyncIterator[bytes]:
        buffer = _Buffer()
        writer = ExportWriter(cast(io.BufferedIOBase, buffer), fmt, scope)  # type: ignore[arg-type]
        async for record in read_events(settings, codec, task_id=task_id, stats=ReadStats()):
            writer.write(ExportedEvent.of(record))
            if buffer.size >= _CHUNK_BYTES:
                yield buffer.take()
        writer.flush()
        yield buffer.take()

    return StreamingResponse(
        body(),
        media_type=_MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{task_id}.{fmt.value}"'},
    )
