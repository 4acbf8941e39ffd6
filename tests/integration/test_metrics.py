"""Prometheus metrics of every process after real tasks: the API's /metrics and each worker's own
port (api/supervisor.py metrics_ports), checked by value against what the tasks wrote on the log.

The platforms are shared with other tests of the session, so every counter is compared as a delta
between a scrape before and one after; series of this test's own org start from nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from api.supervisor import metrics_ports
from schemas.events import (
    BudgetExceeded,
    Event,
    LlmCallCompleted,
    TaskAccepted,
    TaskCompleted,
    ToolCallCompleted,
)
from streams.settings import Settings
from streams.topics import REQUESTS
from tests.fixtures.platform import BUDGETS_USD, ScriptedPlatform
from tests.fixtures.scripted_llm import Step
from tests.integration.conftest import api, task_history, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
METRICS_TIMEOUT = 30.0  # the API refreshes its lag and approval gauges every 5 s


def scrape(url: str) -> Samples:
    """Every sample of the exposition at ``url``, by name and label set."""
    text = httpx.get(url, timeout=10).raise_for_status().text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def api_url(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}/metrics"


def worker_url(settings: Settings, component: str) -> str:
    return f"http://127.0.0.1:{metrics_ports(settings)[component]}/metrics"


def settled(url: str, check: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape ``url`` until ``check`` holds (metrics are updated just after the log is written)."""

    def attempt() -> Samples | None:
        samples = scrape(url)
        return samples if check(samples) else None

    result: Samples = wait_for(attempt, METRICS_TIMEOUT, what)
    return result


def _submit(settings: Settings, script: str, org: str) -> str:
    with api(settings, org=org) as client:
        response = client.post("/v1/tasks", json={"query": f"Scripted task [[{script}]]"})
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def _ended(settings: Settings, task_id: str, org: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        with api(settings, org=org) as client:
            reply = client.get(f"/v1/tasks/{task_id}")
        view = reply.json() if reply.status_code == 200 else None
        done = view and view["status"] in ("completed", "failed", "cancelled", "rejected")
        return view if done and view["event_count"] == view["last_sequence"] + 1 else None

    return dict(wait_for(ended, 60, f"task {task_id} to end"))


async def _produce_garbage(settings: Settings) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(REQUESTS.name(settings), b"\x00not avro", key=uuid.uuid4().hex.encode())
    finally:
        await producer.stop()


def _payloads(events: list[Event], kind: type[Any]) -> list[Any]:
    return [e.payload for e in events if isinstance(e.payload, kind)]


def test_every_process_exports_its_metrics_with_the_values_on_the_log(
    scripted_platform: ScriptedPlatform,
) -> None:
    settings = scripted_platform.settings
    processor = worker_url(settings, "processor#1")
    org = f"metrics-{uuid.uuid4().hex[:8]}"
    requests_topic = REQUESTS.name(settings)
    before = scrape(processor)
    before_api = scrape(api_url(settings))

    # One task with a calculator call and two LLM calls; one that fails on its org's budget; one
    # garbage record on the requests topic.
    script = f"m-{uuid.uuid4().hex[:10]}"
    scripted_platform.llm.scripts[script] = [
        Step(tool_calls=(("calculator", {"expression": "6 * 7"}),)),
        Step(content="42"),
    ]
    completed_id = _submit(settings, script, org)
    [frugal] = BUDGETS_USD
    failed_id = _submit(settings, script, frugal)
    assert _ended(settings, completed_id, org)["status"] == "completed"
    assert _ended(settings, failed_id, frugal)["status"] == "failed"
    asyncio.run(_produce_garbage(settings))

    history = task_history(settings, completed_id)
    calls = _payloads(history, LlmCallCompleted)
    assert len(calls) == 2 and not any(call.cache_hit for call in calls)
    [tool] = _payloads(history, ToolCallCompleted)
    assert tool.tool == "calculator"
    [accepted] = [e for e in history if isinstance(e.payload, TaskAccepted)]
    [done] = [e for e in history if isinstance(e.payload, TaskCompleted)]
    [exceeded] = _payloads(task_history(settings, failed_id), BudgetExceeded)
    dead_topic = {"source_topic": requests_topic}

    after = settled(
        processor,
        lambda s: (
            value(s, "agentlog_dead_lettered_records_total", **dead_topic)
            > value(before, "agentlog_dead_lettered_records_total", **dead_topic)
        ),
        "the processor to count the dead-lettered record",
    )

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Outcomes: exactly this test's two tasks ended (nothing else runs on the platform meanwhile).
    assert delta("agent_task_total", outcome="completed") == 1
    assert delta("agent_task_total", outcome="failed") == 1
    # Tokens and cost equal the LlmCallCompleted events on the log (the scripted server: 100 + 20 each).
    model = calls[0].model
    assert (
        delta("agent_token_usage_total", org=org, model=model, kind="prompt")
        == sum(c.prompt_tokens for c in calls)
        == 200
    )
    assert (
        delta("agent_token_usage_total", org=org, model=model, kind="completion")
        == sum(c.completion_tokens for c in calls)
        == 40
    )
    assert delta("agentlog_llm_cost_usd_total", org=org, model=model) == pytest.approx(
        sum(c.cost_usd for c in calls)
    )
    # The main agent's latency: TaskAccepted to TaskCompleted as recorded, in mode simple.
    latency = {"agent": "main", "mode": "simple"}
    assert delta("agent_response_latency_seconds_count", **latency) == 1
    recorded = (done.envelope.occurred_at - accepted.envelope.occurred_at).total_seconds()
    assert delta("agent_response_latency_seconds_sum", **latency) == pytest.approx(recorded, abs=1e-6)
    # Two attempts at the scripted provider, none failed; its breaker stays closed.
    assert delta("agentlog_llm_call_duration_seconds_count", provider="scripted") == 2
    assert delta("agentlog_llm_call_errors_total", provider="scripted", reason="InternalServerError") == 0
    assert value(after, "agentlog_circuit_breaker_state", provider="scripted") == 0
    # The calculator call, by tool and outcome.
    assert delta("agentlog_tool_calls_total", tool="calculator", outcome="completed") == 1
    # The org's budget as the ledger holds it: the limit from the settings, the spend the refusal saw.
    assert value(after, "agentlog_budget_limit_usd", org=frugal) == BUDGETS_USD[frugal]
    assert value(after, "agentlog_budget_spent_usd", org=frugal) == pytest.approx(exceeded.used_usd)
    assert delta("agentlog_dead_lettered_records_total", **dead_topic) == 1
    # The scripted platform has no prompt cache: no lookups at all.
    assert delta("agentlog_llm_cache_requests_total", result="miss") == 0

    # The API: projection lag caught up, the processor group's lag per partition, request routes.
    partitions = [str(p) for p in range(REQUESTS.partition_count(settings))]
    group = f"{settings.topic_prefix}-processor"

    def caught_up(samples: Samples) -> bool:
        lags = [
            samples.get(
                (
                    "agentlog_consumer_lag_records",
                    frozenset({"group": group, "topic": requests_topic, "partition": p}.items()),
                )
            )
            for p in partitions
        ]
        projection = [
            samples.get((f"agentlog_projection_lag_{unit}", frozenset({"projector": kind}.items())))
            for unit in ("events", "seconds")
            for kind in ("postgres", "elasticsearch")
        ]
        return lags == [0.0] * len(partitions) and projection == [0.0] * 4

    api_after = settled(api_url(settings), caught_up, "the API's lag gauges to show everything caught up")
    route = {"method": "GET", "route": "/v1/tasks/{task_id}"}
    assert value(api_after, "agentlog_http_request_duration_seconds_count", **route) > value(
        before_api, "agentlog_http_request_duration_seconds_count", **route
    )
    assert value(api_after, "agentlog_http_requests_total", **route, status="200") > value(
        before_api, "agentlog_http_requests_total", **route, status="200"
    )
    assert (
        value(api_after, "agentlog_http_requests_total", method="POST", route="/v1/tasks", status="202") >= 2
    )

    # The other workers answer on their own ports with the catalogue's families.
    for component in ("projector-postgres", "projector-elasticsearch", "auditor"):
        text = httpx.get(worker_url(settings, component), timeout=10).raise_for_status().text
        assert "# TYPE agentlog_dead_lettered_records_total counter" in text, component
        assert "process_resident_memory_bytes" in text, component


def test_prompt_cache_lookups_are_counted_as_the_calls_record_them(platform: Settings) -> None:
    processor = worker_url(platform, "processor#1")
    before = scrape(processor)
    query = f"What is (17 + 25) * 3? [{uuid.uuid4().hex[:8]}]"
    with api(platform) as client:
        first = client.post("/v1/tasks", json={"query": query}).json()["task_id"]
    _ended(platform, first, "acme")
    with api(platform) as client:
        second = client.post("/v1/tasks", json={"query": query}).json()["task_id"]
    _ended(platform, second, "acme")
    calls = [c for task in (first, second) for c in _payloads(task_history(platform, task), LlmCallCompleted)]
    hits = sum(1 for c in calls if c.cache_hit)
    misses = len(calls) - hits
    assert misses >= 1  # the first call of the first task cannot have been cached (a fresh query)

    after = settled(
        processor,
        lambda s: (
            value(s, "agent_task_total", outcome="completed")
            - value(before, "agent_task_total", outcome="completed")
            == 2
        ),
        "the processor to count both tasks",
    )
    # Every call looked the cache up once: a hit answered it, a miss sent it to the provider.
    for result, expected in (("miss", misses), ("hit", hits)):
        counted = value(after, "agentlog_llm_cache_requests_total", result=result) - value(
            before, "agentlog_llm_cache_requests_total", result=result
        )
        assert counted == expected, (result, counted, calls)
