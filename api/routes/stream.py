"""Live task streams: ``GET /v1/tasks/{id}/stream`` (server-sent events) and its WebSocket twin
``/v1/tasks/{id}/ws``.

Both relay the task's events as they are written to the log (read from Kafka, not the read
models) and interleave the live tokens of its LLM calls (Redis pub/sub). Events carry their
per-task sequence, which is dense, so a reconnecting client resumes after the last one it saw
(``Last-Event-ID`` / ``?after_sequence=``) and loses nothing; tokens are best effort.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, HTTPException, Query, WebSocket, status
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError
from starlette.websockets import WebSocketState

from api.deps import CallerDep, Resources, ResourcesDep, authenticate
from api.errors import problem
from api.routes.tasks import _task_of_org
from processors.llm.streaming import channel as token_channel
from projections.task_view import TaskView
from schemas.events import Event
from streams.follow import TaskLogStart, follow_task_events
from streams.topics import EVENTS, REQUESTS

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

# A comment line every so often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
# Events wait in this queue for a slow client: when it is full, reading the log pauses (nothing is
# lost), and tokens, which are best effort, are dropped rather than hold events up.
_QUEUE_SIZE = 1000

MaxSeconds = Annotated[float, Query(gt=0, le=3600, description="Close the stream after this long.")]
AfterSequence = Annotated[
    int | None,
    Query(ge=-1, description="Send only events with a greater sequence (resume after the last one seen)."),
]


@dataclass(frozen=True)
class LiveMessage:
    """One message of a live stream, whatever carries it."""

    kind: Literal["event", "token", "end"]
    data: dict[str, Any]
    sequence: int | None = None
    event_type: str | None = None


def event_message(event: Event) -> LiveMessage:
    """A task event as the live streams send it (the same fields as ``GET /v1/tasks/{id}/events``)."""
    return LiveMessage(
        kind="event",
        data={
            "sequence": event.sequence,
            "event_id": str(event.envelope.event_id),
            "event_type": event.event_type,
            "occurred_at": event.envelope.occurred_at.isoformat(),
            "payload": event.payload.model_dump(mode="json"),
        },
        sequence=event.sequence,
        event_type=event.event_type,
    )


async def _log_start(resources: Resources, view: TaskView, after_sequence: int) -> TaskLogStart:
    """Where the task's records are, from the offsets the read model stored with its events: the
    stream seeks there instead of scanning the partitions."""
    settings = resources.settings
    requests_topic, events_topic = REQUESTS.name(settings), EVENTS.name(settings)
    first = await resources.queries.events(view.task_id, after_sequence=-1, limit=2)
    submission = next((r for r in first if r["sequence"] == 0 and r["topic"] == requests_topic), None)
    first_event = next((r for r in first if r["topic"] == events_topic), None)
    events_offset = first_event["kafka_offset"] if first_event else None
    if after_sequence >= 1:
        # Start at the last event the client has (not after it): if that was the terminal event,
        # reading it again is how the stream knows the task is over.
        last_seen = await resources.queries.events(view.task_id, after_sequence=after_sequence - 1, limit=1)
        if last_seen and last_seen[0]["sequence"] == after_sequence and last_seen[0]["topic"] == events_topic:
            events_offset = last_seen[0]["kafka_offset"]
    return TaskLogStart(
        submission_offset=submission["kafka_offset"] if submission else None,
        events_offset=events_offset,
        not_before=view.submitted_at,
    )


async def live_messages(
    resources: Resources, view: TaskView, after_sequence: int, max_seconds: float
) -> AsyncGenerator[LiveMessage | None, None]:
    """The task's events after ``after_sequence`` and its live tokens, merged; ``end`` after the
    terminal event. ``None`` when nothing came for ``KEEPALIVE_SECONDS`` (time for a keep-alive).
    Stops after ``max_seconds``, or without ``end`` if reading the log fails (the client resumes)."""
    task_id = view.task_id
    queue: asyncio.Queue[LiveMessage | BaseException] = asyncio.Queue(_QUEUE_SIZE)
    start = await _log_start(resources, view, after_sequence)
    pubsub = resources.redis.pubsub()

    async def relay_events() -> None:
        try:
            last = after_sequence
            events = follow_task_events(
                resources.settings,
                resources.producer.codec,
                task_id,
                after_sequence=after_sequence,
                start=start,
            )
            async with contextlib.aclosing(events):
                async for event in events:
                    last = event.sequence
                    await queue.put(event_message(event))
            await queue.put(LiveMessage(kind="end", data={"task_id": task_id, "last_sequence": last}))
        except Exception as exc:
            log.exception("live stream of task %s: reading the log failed", task_id)
            await queue.put(exc)

    async def relay_tokens() -> None:
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(LiveMessage(kind="token", data=orjson.loads(message["data"])))
        except RedisError as exc:
            log.warning("live stream of task %s: no more tokens (events still flow): %s", task_id, exc)

    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    try:
        try:
            # Subscribed before the log is read, so tokens of a call already under way are not missed.
            await pubsub.subscribe(token_channel(task_id))
            tasks.append(asyncio.create_task(relay_tokens()))
        except RedisError as exc:
            log.warning("live stream of task %s: no tokens (events still flow): %s", task_id, exc)
        tasks.append(asyncio.create_task(relay_events()))
        while (remaining := deadline - loop.time()) > 0:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=min(KEEPALIVE_SECONDS, remaining))
            except TimeoutError:
                if deadline - loop.time() > 0:
                    yield None
                continue
            if isinstance(item, BaseException):
                return
            yield item
            if item.kind == "end":
                return
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(RedisError):
            await pubsub.unsubscribe()
        await pubsub.aclose()


def _sse(message: LiveMessage | None) -> str:
    if message is None:
        return ": keep-alive\n\n"
    data = orjson.dumps(message.data).decode()
    if message.kind == "event":
        return f"id: {message.sequence}\nevent: {message.event_type}\ndata: {data}\n\n"
    return f"event: {message.kind}\ndata: {data}\n\n"


def _resume_point(last_event_id: str | None, after_sequence: int | None) -> int:
    if last_event_id is not None:
        # The header wins: a browser reconnecting sends it with the URL it first opened, whose
        # ?after_sequence= is older.
        try:
            value = int(last_event_id)
        except ValueError as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                f"Last-Event-ID {last_event_id!r} is not an event sequence (an integer)",
            ) from exc
        if value < -1:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"Last-Event-ID {value} is below -1")
        return value
    return -1 if after_sequence is None else after_sequence


@router.get(
    "/{task_id}/stream",
    operation_id="stream_task",
    summary="The task's events and live tokens as they happen (server-sent events, resumable)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        404: {"description": "No such task in the caller's org"},
    },
)
async def stream_task(
    task_id: str,
    resources: ResourcesDep,
    caller: CallerDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=32,
            description="Sent by a reconnecting EventSource: resume after this sequence.",
        ),
    ] = None,
    after_sequence: AfterSequence = None,
    max_seconds: MaxSeconds = 300,
) -> StreamingResponse:
    """Every event of the task, read from the log, as ``id: <sequence>``, ``event: <event type>``,
    ``data: {sequence, event_id, event_type, occurred_at, payload}``: first those already written
    (after ``Last-Event-ID`` or ``?after_sequence=``, the header winning), then each new one. Each
    sequence is sent once and sequences are dense (0, 1, 2, ...), so a gap means a lost message.
    After the terminal event (TaskCompleted, TaskFailed, TaskCancelled, TaskRejected) comes
    ``event: end`` (``{task_id, last_sequence}``) and the stream closes; a stream closed without
    ``end`` (``max_seconds``, a failure) is resumed by reconnecting.

    Interleaved: ``event: token`` with ``{step, attempt, delta}`` (``done: true`` ends a call) while
    the processor streams a model answer (``AGENTLOG_LLM_STREAM_TOKENS``). Tokens have no id: they
    are best effort and not resumable; the recorded answer is the ``LlmCallCompleted`` event. A
    comment line every 15 s keeps idle connections open."""
    after = _resume_point(last_event_id, after_sequence)
    view = await _task_of_org(resources, task_id, caller.org_id)
    messages = live_messages(resources, view, after, max_seconds)

    async def body() -> AsyncIterator[str]:
        async with contextlib.aclosing(messages):
            yield ": stream of task events\n\n"
            # A client that goes away cancels this (Starlette listens for the disconnect), which
            # closes the Kafka consumer and the Redis subscription.
            async for message in messages:
                yield _sse(message)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        # no-transform and X-Accel-Buffering: proxies must not buffer or compress the stream.
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )


async def _deny(websocket: WebSocket, exc: HTTPException) -> None:
    """Answer the handshake with the HTTP error (problem+json), as the SSE endpoint would; servers
    without the WebSocket denial extension get a policy-violation close instead."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        response = problem(exc.status_code, HTTPStatus(exc.status_code).phrase, str(exc.detail))
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=1008, reason=str(exc.detail)[:120])


def _token_of(websocket: WebSocket, access_token: str | None) -> str | None:
    if access_token:
        return access_token
    if api_key := websocket.headers.get("x-api-key"):
        return api_key
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


@router.websocket("/{task_id}/ws")
async def stream_task_ws(
    websocket: WebSocket,
    task_id: str,
    access_token: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="The API key or JWT (browsers cannot set headers on a WebSocket).",
        ),
    ] = None,
    after_sequence: AfterSequence = None,
    max_seconds: MaxSeconds = 300,
) -> None:
    """The twin of ``GET /v1/tasks/{id}/stream``: the same messages as JSON text frames,
    ``{"type": "event", sequence, event_id, event_type, occurred_at, payload}``,
    ``{"type": "token", step, attempt, delta}`` and ``{"type": "end", task_id, last_sequence}``;
    resume with ``?after_sequence=``. Credentials as ``?access_token=``, ``Authorization: Bearer``
    or ``X-API-Key``; a refused handshake answers 401/404/429 as HTTP."""
    resources: Resources = websocket.app.state.resources
    try:
        caller = await authenticate(resources, _token_of(websocket, access_token))
        view = await _task_of_org(resources, task_id, caller.org_id)
    except HTTPException as exc:
        await _deny(websocket, exc)
        return
    await websocket.accept()
    after = -1 if after_sequence is None else after_sequence

    async def send_all() -> None:
        async with contextlib.aclosing(live_messages(resources, view, after, max_seconds)) as messages:
            async for message in messages:
                if message is not None:  # the protocol's own pings keep the connection open
                    await websocket.send_text(orjson.dumps({"type": message.kind, **message.data}).decode())

    async def until_closed() -> None:
        # Reading is the only way to learn that the client went away while the task is quiet.
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    sending, receiving = asyncio.create_task(send_all()), asyncio.create_task(until_closed())
    try:
        done, _ = await asyncio.wait({sending, receiving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sending, receiving):
            task.cancel()
        await asyncio.gather(sending, receiving, return_exceptions=True)
    if websocket.client_state == WebSocketState.CONNECTED and receiving not in done:
        # 1011: the stream failed on the server's side (the client resumes, as after a drop).
        clean = sending in done and sending.exception() is None
        await websocket.close(code=1000 if clean else 1011)
