"""A trace id put in by a producer runs through the platform: the processor's spans (its receive,
the task's run, each decision, the LLM call and the tool call), the traceparent headers of the
events it writes, both projectors' spans, and the JSON log lines of the processor and projectors.

The components are separate processes (``agentlog serve``), so an in-memory exporter in this
process could not see their spans; instead the platform runs with ``AGENTLOG_TRACE_FILE``, the
operators' span file, which every process appends its finished spans to, and the test reads it.
That also exercises each entry point's own tracing and logging set-up, which an in-process run of
the loops would bypass.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.history import partition_for
from streams.sdk import AgentlogProducer
from streams.settings import Settings
from streams.topics import EVENTS
from tests.fixtures.platform import running_platform
from tests.integration.conftest import TASK_TIMEOUT, api, wait_for

pytestmark = pytest.mark.integration

QUERY = "What is (17 + 25) * 3? Use the calculator."


@pytest.fixture(scope="module")
def traced(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path]]:
    """A platform exporting spans to a file, its processor and consumer loop logging at DEBUG."""
    home = tmp_path_factory.mktemp("agentlog-traced")
    env = {
        "AGENTLOG_TRACE_FILE": str(home / "spans.jsonl"),
        "AGENTLOG_LOG_LEVEL": "INFO,processors=DEBUG,streams.consumer=DEBUG",
        # A cached answer makes no HTTP call (Redis outlives the platform): every call must be made.
        "AGENTLOG_LLM_CACHE_ENABLED": "false",
    }
    with running_platform(stack, home, **env) as (settings, _):
        yield settings, home


def _spans(home: Path, trace_id: str) -> list[dict[str, Any]]:
    path = home / "spans.jsonl"
    if not path.exists():
        return []
    spans = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [span for span in spans if span["trace_id"] == trace_id]


def _log_lines(home: Path, component: str) -> list[dict[str, Any]]:
    text = (home / "logs" / "platform" / f"{component}.log").read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _event_traceparents(settings: Settings, task_id: str) -> list[str]:
    """The traceparent header of every event of ``task_id`` on the events topic."""

    async def read() -> list[str]:
        topic = EVENTS.name(settings)
        tp = TopicPartition(topic, partition_for(task_id, EVENTS.partition_count(settings)))
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            found: list[str] = []
            while await consumer.position(tp) < end:
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    if record.key == task_id.encode():
                        found.append(dict(record.headers)["traceparent"].decode())
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _wait_until_completed(settings: Settings, task_id: str) -> None:
    with api(settings) as client:

        def completed() -> bool:
            reply = client.get(f"/v1/tasks/{task_id}")
            return reply.status_code == 200 and reply.json()["status"] == "completed"

        wait_for(completed, TASK_TIMEOUT, f"task {task_id} to complete")


def test_a_producers_trace_id_runs_through_processor_projectors_and_logs(
    traced: tuple[Settings, Path],
) -> None:
    settings, home = traced
    trace_id, producer_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traceparent = f"00-{trace_id}-{producer_span}-01"

    async def submit() -> str:
        async with AgentlogProducer(settings, source="billing-service") as producer:
            produced = await producer.submit_task(
                query=QUERY, org_id="acme", user_id="sdk-user", traceparent=traceparent
            )
        assert produced.task_id is not None
        return produced.task_id

    task_id = asyncio.run(submit())
    _wait_until_completed(settings, task_id)

    def projected_by_both() -> list[dict[str, Any]] | None:
        spans = _spans(home, trace_id)
        services = {span["service"] for span in spans}
        wanted = {"agentlog-projector-postgres", "agentlog-projector-elasticsearch"}
        return spans if wanted <= services else None

    spans = wait_for(projected_by_both, TASK_TIMEOUT, "both projectors' spans of the task's trace")
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)

    # The processor continues the producer's span: its receive and the task's run are its children.
    [receive] = [s for s in by_name["processor receive"] if s["parent_span_id"] == producer_span]
    [run] = by_name["task run"]
    assert receive["service"] == run["service"] == "agentlog-processor"
    assert run["parent_span_id"] == producer_span
    assert run["attributes"]["agentlog.task_id"] == task_id
    decisions = by_name["task decision"]
    assert decisions and all(d["parent_span_id"] == run["span_id"] for d in decisions)
    [llm] = by_name["llm call"][:1]
    assert llm["parent_span_id"] == run["span_id"] and llm["kind"] == "CLIENT"
    assert llm["attributes"]["agentlog.task_id"] == task_id
    # The aiohttp instrumentation: the provider's HTTP request is a child of the LLM call span.
    assert any(s["parent_span_id"] == llm["span_id"] and s["kind"] == "CLIENT" for s in spans), by_name.keys()
    [tool] = by_name["tool calculator"][:1]
    assert tool["parent_span_id"] == run["span_id"]

    # Every event the processor wrote carries the trace, in the span of the decision that wrote it.
    headers = _event_traceparents(settings, task_id)
    assert len(headers) >= 4
    decision_spans = {d["span_id"] for d in decisions}
    for header in headers:
        _version, header_trace, header_span, _flags = header.split("-")
        assert header_trace == trace_id, header
        assert header_span in decision_spans, header

    # Both projectors continue it: a span per projected trace, parented on the written record's span.
    for kind in ("postgres", "elasticsearch"):
        written = [s for s in spans if s["service"] == f"agentlog-projector-{kind}"]
        assert {s["name"] for s in written} == {f"projector-{kind} write"}
        assert {s["parent_span_id"] for s in written} <= decision_spans | {producer_span}
        assert decision_spans & {s["parent_span_id"] for s in written}
        assert all(s["attributes"]["agentlog.task_id"] == task_id for s in written)

    # JSON log lines of the processor and both projectors name the task, its org and the trace.
    def logged(component: str) -> list[dict[str, Any]] | None:
        lines = [line for line in _log_lines(home, component) if line.get("task_id") == task_id]
        return lines or None

    for component in ("processor-1", "projector-postgres", "projector-elasticsearch"):
        lines = wait_for(lambda c=component: logged(c), 10, f"{component} log lines of the task")
        assert {line["trace_id"] for line in lines} == {trace_id}, (component, lines[:3])
        assert {line["component"] for line in lines} == {component.removesuffix("-1")}
    processor_lines = logged("processor-1") or []
    assert any(line.get("org_id") == "acme" for line in processor_lines)
    assert any(f"task {task_id} ran to" in line["message"] for line in processor_lines)
    for component in ("projector-postgres", "projector-elasticsearch"):
        assert all(line["org_id"] == "acme" for line in logged(component) or [])


def test_the_api_continues_an_http_callers_traceparent(traced: tuple[Settings, Path]) -> None:
    settings, home = traced
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    with api(settings) as client:
        reply = client.post(
            "/v1/tasks",
            json={"query": "What is 6 * 7?"},
            headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
    assert reply.status_code == 202, reply.text
    task_id = reply.json()["task_id"]
    _wait_until_completed(settings, task_id)
    spans = wait_for(
        lambda: (s := _spans(home, trace_id)) and any(x["name"] == "task run" for x in s) and s,
        TASK_TIMEOUT,
        "the API request's trace in the processor",
    )
    [server] = [s for s in spans if s["service"] == "agentlog-api" and s["parent_span_id"] == caller_span]
    [submit] = [s for s in spans if s["name"] == "task submit"]
    assert submit["parent_span_id"] == server["span_id"]
    [run] = [s for s in spans if s["name"] == "task run"]
    assert run["parent_span_id"] == submit["span_id"]
    assert {h.split("-")[1] for h in _event_traceparents(settings, task_id)} == {trace_id}
