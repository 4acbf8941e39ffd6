"""Live task streams on the real stack: ``GET /v1/tasks/{id}/stream`` (server-sent events) and its
WebSocket twin relay the task's events from the log, resume after a disconnect without losing or
repeating one, interleave the streamed tokens, and refuse other orgs and anonymous callers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.fixtures.platform import ScriptedPlatform
from tests.fixtures.scripted_llm import Step
from tests.integration.conftest import TASK_TIMEOUT, api, bearer, task_history, wait_for

STREAM_TIMEOUT = TASK_TIMEOUT + 30


@dataclass(frozen=True)
class Sse:
    """One server-sent event as a client sees it."""

    event: str
    data: dict[str, Any]
    id: str | None


def _sse(lines: Iterator[str]) -> Iterator[Sse]:
    """Parses ``text/event-stream`` lines (comment lines are keep-alives and skipped)."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                yield Sse(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def _script(platform: ScriptedPlatform, *steps: Step) -> str:
    name = f"live-{uuid.uuid4().hex[:10]}"
    platform.llm.scripts[name] = list(steps)
    return name


def _submit_slow_task(platform: ScriptedPlatform, answer: str = "All done.", delay: float = 1.0) -> str:
    """A task that takes a few seconds (a tool call between two delayed answers), visible in the
    read model when this returns, so a stream opened now sees it live."""
    script = _script(
        platform,
        Step(tool_calls=(("python", {"code": "print(6 * 7)"}),), delay=delay),
        Step(content=answer, delay=delay),
    )
    with api(platform.settings) as client:
        response = client.post("/v1/tasks", json={"query": f"Scripted task [[{script}]]"})
        assert response.status_code == 202, response.text
        task_id = str(response.json()["task_id"])
        wait_for(
            lambda: client.get(f"/v1/tasks/{task_id}").status_code == 200,
            TASK_TIMEOUT,
            f"task {task_id} in the read model",
        )
    return task_id


def _url(platform: ScriptedPlatform, path: str, scheme: str = "http") -> str:
    settings = platform.settings
    return f"{scheme}://{settings.api_host}:{settings.api_port}{path}"


def _stream(
    platform: ScriptedPlatform,
    task_id: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    stop_after_events: int | None = None,
) -> list[Sse]:
    """What the SSE stream sends, until it closes (or, to simulate a dropped connection, until
    ``stop_after_events`` task events came: the connection is then closed)."""
    received: list[Sse] = []
    auth = {"Authorization": f"Bearer {bearer(platform.settings)}", **(headers or {})}
    with httpx.stream(
        "GET",
        _url(platform, f"/v1/tasks/{task_id}/stream"),
        headers=auth,
        params={"max_seconds": STREAM_TIMEOUT, **(params or {})},
        timeout=STREAM_TIMEOUT + 10,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for message in _sse(response.iter_lines()):
            received.append(message)
            events = [m for m in received if m.event not in ("token", "end")]
            if stop_after_events is not None and len(events) == stop_after_events:
                break
    return received


def _events(messages: list[Sse]) -> list[Sse]:
    return [m for m in messages if m.event not in ("token", "end")]


def _log_sequences(platform: ScriptedPlatform, task_id: str) -> list[tuple[int, str, str]]:
    """(sequence, event id, event type) of every event of the task, read back from Kafka."""
    return [
        (e.sequence, str(e.envelope.event_id), e.event_type) for e in task_history(platform.settings, task_id)
    ]


def _as_log(events: list[Sse]) -> list[tuple[int, str, str]]:
    return [(m.data["sequence"], m.data["event_id"], m.data["event_type"]) for m in events]


def test_a_stream_sends_every_event_of_the_task_in_sequence_order_then_end(
    scripted_platform: ScriptedPlatform,
) -> None:
    task_id = _submit_slow_task(scripted_platform)
    messages = _stream(scripted_platform, task_id)
    events = _events(messages)
    # Exactly the task's history on the log: no gap, no duplicate, same order.
    assert _as_log(events) == _log_sequences(scripted_platform, task_id)
    assert [m.id for m in events] == [str(m.data["sequence"]) for m in events]
    assert all(m.event == m.data["event_type"] for m in events)
    assert events[0].event == "TaskSubmitted" and events[-1].event == "TaskCompleted"
    assert events[-1].data["payload"]["result"] == "All done."
    assert messages[-1].event == "end"
    assert messages[-1].data == {"task_id": task_id, "last_sequence": events[-1].data["sequence"]}


def test_a_stream_resumed_with_last_event_id_loses_and_repeats_nothing(
    scripted_platform: ScriptedPlatform,
) -> None:
    task_id = _submit_slow_task(scripted_platform, delay=1.5)
    first = _events(_stream(scripted_platform, task_id, stop_after_events=3))
    assert [m.data["sequence"] for m in first] == [0, 1, 2]
    # Reconnect as an EventSource does: same URL (its stale ?after_sequence= loses to the header).
    rest = _stream(
        scripted_platform,
        task_id,
        headers={"Last-Event-ID": first[-1].id or ""},
        params={"after_sequence": 0},
    )
    assert rest[-1].event == "end"
    union = first + _events(rest)
    assert _as_log(union) == _log_sequences(scripted_platform, task_id)

    # After the end: resuming from a middle event sends exactly the later ones, from the terminal
    # event nothing but the end.
    history = _log_sequences(scripted_platform, task_id)
    middle = history[len(history) // 2][0]
    later = _stream(scripted_platform, task_id, params={"after_sequence": middle})
    assert _as_log(_events(later)) == [h for h in history if h[0] > middle]
    last = history[-1][0]
    assert _stream(scripted_platform, task_id, headers={"Last-Event-ID": str(last)}) == [
        Sse("end", {"task_id": task_id, "last_sequence": last}, None)
    ]


def test_the_answers_tokens_stream_live_between_the_events(scripted_platform: ScriptedPlatform) -> None:
    answer = "The quick brown fox jumps over the lazy dog."
    task_id = _submit_slow_task(scripted_platform, answer=answer, delay=2.0)
    messages = _stream(scripted_platform, task_id)
    tokens = [m for m in messages if m.event == "token"]
    assert all(m.id is None for m in tokens)  # not resumable: no id
    # The last call's latest attempt is the answer; it came word by word, before the answer's event.
    last_call = max((m.data["step"], m.data["attempt"]) for m in tokens)
    deltas = [
        m.data["delta"]
        for m in tokens
        if (m.data["step"], m.data["attempt"]) == last_call and "delta" in m.data
    ]
    assert "".join(deltas) == answer and len(deltas) > 1
    order = [m.event for m in messages]
    assert order.index("token") < order.index("TaskCompleted")
    assert _events(messages)[-1].data["payload"]["result"] == answer


def test_other_orgs_and_anonymous_callers_are_refused(scripted_platform: ScriptedPlatform) -> None:
    task_id = _submit_slow_task(scripted_platform, delay=0)
    path = f"/v1/tasks/{task_id}/stream"
    with api(scripted_platform.settings, org="other-org") as client:
        assert client.get(path).status_code == 404
    anonymous = httpx.get(_url(scripted_platform, path), timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    bad_resume = httpx.get(
        _url(scripted_platform, path),
        headers={"Authorization": f"Bearer {bearer(scripted_platform.settings)}", "Last-Event-ID": "x"},
        timeout=10,
    )
    assert bad_resume.status_code == 422

    ws_path = f"/v1/tasks/{task_id}/ws"
    other = bearer(scripted_platform.settings, org="other-org")
    for url, status in [
        (_url(scripted_platform, ws_path, "ws"), 401),
        (_url(scripted_platform, f"{ws_path}?access_token=not-a-token", "ws"), 401),
        (_url(scripted_platform, f"{ws_path}?access_token={other}", "ws"), 404),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=10).close()
        assert refused.value.response.status_code == status, url


def test_the_websocket_twin_sends_the_same_events_and_resumes_with_after_sequence(
    scripted_platform: ScriptedPlatform,
) -> None:
    task_id = _submit_slow_task(scripted_platform)
    token = bearer(scripted_platform.settings)
    url = _url(scripted_platform, f"/v1/tasks/{task_id}/ws", "ws")
    messages: list[dict[str, Any]] = []
    with connect(f"{url}?access_token={token}", open_timeout=10) as websocket:
        for raw in websocket:
            messages.append(json.loads(raw))
    # The server closed the socket after the end.
    events = [m for m in messages if m["type"] == "event"]
    assert messages[-1] == {"type": "end", "task_id": task_id, "last_sequence": events[-1]["sequence"]}
    history = _log_sequences(scripted_platform, task_id)
    assert [(m["sequence"], m["event_id"], m["event_type"]) for m in events] == history

    # Resumed with the header form of the credentials.
    after = history[2][0]
    with connect(
        f"{url}?after_sequence={after}", additional_headers={"Authorization": f"Bearer {token}"}
    ) as websocket:
        resumed = [json.loads(raw) for raw in websocket]
    assert [m["sequence"] for m in resumed if m["type"] == "event"] == [h[0] for h in history if h[0] > after]
    assert resumed[-1]["type"] == "end"
