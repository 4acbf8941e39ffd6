"""streams/metrics.py: the catalogue names what the processes export, by the conventions, with
bounded labels, documented in docs/operations.md, and a worker can serve it."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from streams import metrics
from streams.metrics import CATALOGUE, DEFINED_ELSEWHERE, MetricSpec, agent_kind, serve_metrics
from tests.unit.deploy.references import exported_series

ROOT = Path(__file__).resolve().parents[3]
# Labels that name one task, call, session or request: each value a new series, without bound.
UNBOUNDED_LABELS = {"task", "task_id", "session", "session_id", "idempotency_key", "event_id", "user", "path"}
COMPONENTS = {"api", "processor", "projector-postgres", "projector-elasticsearch", "registry", "auditor"}


def _family_type(spec: MetricSpec) -> str:
    for family in REGISTRY.collect():
        if spec.name in (family.name, f"{family.name}_total"):
            return family.type
    raise AssertionError(f"{spec.name} is not registered")


def test_every_metric_object_of_the_module_is_in_the_catalogue() -> None:
    objects = {
        id(value) for value in vars(metrics).values() if isinstance(value, Counter | Gauge | Histogram)
    }
    listed = {id(spec.metric) for spec in CATALOGUE if spec.metric is not None}
    assert objects == listed


def test_the_issue_names_are_kept_exactly() -> None:
    names = {spec.name for spec in CATALOGUE}
    assert {"agent_response_latency_seconds", "agent_token_usage_total", "agent_task_total"} <= names


def test_names_are_unique_and_follow_the_prometheus_conventions() -> None:
    names = [spec.name for spec in CATALOGUE]
    assert len(names) == len(set(names))
    for spec in CATALOGUE:
        kind = _family_type(spec)
        assert spec.name.startswith(("agentlog_", "agent_")), spec.name
        if kind == "counter":
            assert spec.name.endswith("_total"), spec.name
        else:
            assert not spec.name.endswith("_total"), spec.name
        if kind == "histogram":
            # Durations in the base unit, never milliseconds.
            assert spec.name.endswith("_seconds"), spec.name
        assert "_milliseconds" not in spec.name and "_ms" not in spec.name, spec.name


def test_the_metrics_defined_elsewhere_exist_where_the_catalogue_says() -> None:
    assert DEFINED_ELSEWHERE == {
        "agentlog_projection_lag_events": "projections/lag.py",
        "agentlog_projection_lag_seconds": "projections/lag.py",
        "agentlog_http_requests_total": "api/routes/ops.py",
        "agentlog_http_request_duration_seconds": "api/routes/ops.py",
    }
    known = exported_series()  # imports projections.lag and api.routes.ops
    for name, module in DEFINED_ELSEWHERE.items():
        assert (ROOT / module).is_file()
        assert name in (ROOT / module).read_text(), f"{name} not defined in {module}"
        assert name in known or f"{name}_count" in known, name


def test_labels_are_bounded() -> None:
    for spec in CATALOGUE:
        if spec.metric is None:
            continue
        labels = set(spec.metric._labelnames)
        assert not labels & UNBOUNDED_LABELS, (spec.name, labels)
        assert not any(label.endswith("_id") for label in labels), (spec.name, labels)


def test_every_metric_names_existing_components_and_what_it_measures() -> None:
    for spec in CATALOGUE:
        assert spec.exported_by and set(spec.exported_by) <= COMPONENTS, spec
        assert spec.measures.split(":")[0] in {"counter", "gauge", "histogram"}, spec
        assert spec.measures.split(":")[0] == _family_type(spec), spec


def test_docs_operations_tabulates_every_metric() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    missing = [spec.name for spec in CATALOGUE if f"`{spec.name}`" not in text]
    assert missing == []


def test_agent_kind_folds_sub_agent_ids_into_one_label_value() -> None:
    assert agent_kind("main") == "main"
    assert {agent_kind(f"subtask-{n}") for n in range(50)} == {"sub"}


def test_breaker_state_values_cover_every_breaker_status() -> None:
    from processors.llm.breaker import BreakerStatus

    assert set(metrics.BREAKER_STATE_VALUES) == {status.value for status in BreakerStatus}
    assert metrics.BREAKER_STATE_VALUES == {"closed": 0, "half_open": 1, "open": 2}


@pytest.fixture
def served() -> Iterator[tuple[CollectorRegistry, int]]:
    registry = CollectorRegistry()
    server, thread = serve_metrics(0, host="127.0.0.1", registry=registry)
    yield registry, server.server_port
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_serve_metrics_answers_a_scrape_with_the_registry(served: tuple[CollectorRegistry, int]) -> None:
    registry, port = served
    Counter("agentlog_example_records_total", "An example.", ["source_topic"], registry=registry).labels(
        source_topic="agentlog.tasks.events"
    ).inc(3)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    assert 'agentlog_example_records_total{source_topic="agentlog.tasks.events"} 3.0' in body
