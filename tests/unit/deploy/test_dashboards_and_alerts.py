"""Grafana dashboards and Prometheus alert rules: valid files, and every metric their PromQL refers to
is one the platform exports (the catalogue in streams/metrics.py, the two metrics defined beside
their measurement, the default process collectors, and Prometheus's own ``up``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.references import (
    DEPLOY,
    alert_expressions,
    dashboard_expressions,
    exported_series,
    metric_names,
    unknown_metrics,
)

DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
ALERTS = DEPLOY / "prometheus" / "alerts.yml"


def _dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _alerts() -> dict[str, Any]:
    return yaml.safe_load(ALERTS.read_text())


def test_the_two_dashboards_are_there() -> None:
    assert {path.name for path in DASHBOARDS} == {"platform-overview.json", "pipeline-health.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_a_grafana_dashboard_with_queried_panels(path: Path) -> None:
    dashboard = _dashboard(path)
    assert dashboard["uid"] and dashboard["title"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 6
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        # The provisioned datasource is chosen through the dashboard's variable.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_metric_a_dashboard_queries_is_exported(path: Path) -> None:
    expressions = dashboard_expressions(_dashboard(path))
    assert expressions
    assert unknown_metrics(expressions, exported_series()) == []


def test_the_dashboards_show_what_the_issue_asks_for() -> None:
    overview = " ".join(
        e for _, e in dashboard_expressions(_dashboard(DEPLOY / "grafana/dashboards/platform-overview.json"))
    )
    pipeline = " ".join(
        e for _, e in dashboard_expressions(_dashboard(DEPLOY / "grafana/dashboards/pipeline-health.json"))
    )
    for metric in (
        "agent_task_total",  # tasks/s and success rate
        "agent_response_latency_seconds_bucket",  # p50/p99
        "agent_token_usage_total",
        "agentlog_llm_cost_usd_total",
        "agentlog_llm_cache_requests_total",
    ):
        assert metric in overview, metric
    assert "histogram_quantile(0.5," in overview and "histogram_quantile(0.99," in overview
    for metric in (
        "agentlog_consumer_lag_records",
        "agentlog_projection_lag_events",
        "agentlog_projection_lag_seconds",
        "agentlog_dead_lettered_records_total",
        "agentlog_circuit_breaker_state",
    ):
        assert metric in pipeline, metric


def test_the_check_reports_an_unknown_metric_in_a_dashboard() -> None:
    dashboard = _dashboard(DASHBOARDS[0])
    dashboard["panels"].append(
        {
            "id": 999,
            "type": "timeseries",
            "title": "typo",
            "targets": [{"expr": "sum(rate(agent_tasks_total[$__rate_interval]))", "refId": "A"}],
        }
    )
    problems = unknown_metrics(dashboard_expressions(dashboard), exported_series())
    assert len(problems) == 1 and "agent_tasks_total" in problems[0]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        # A histogram's series by their suffixes; the bare family name is no series.
        ("histogram_quantile(0.95, sum by (le) (rate(agent_response_latency_seconds_bucket[5m])))", set()),
        ("rate(agent_response_latency_seconds[5m])", {"agent_response_latency_seconds"}),
        # The counter without its _total selects nothing.
        ("rate(agent_task[5m])", {"agent_task"}),
        ('{__name__="agentlog_nope"} > 0', {"agentlog_nope"}),
        (
            "max by (org) (agentlog_budget_spent_usd) / on (org) agentlog_missing_usd",
            {"agentlog_missing_usd"},
        ),
    ],
)
def test_unknown_names_are_found_anywhere_in_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) - exported_series() == names


def test_an_expression_that_does_not_parse_is_reported() -> None:
    problems = unknown_metrics([("rule 'x'", "sum(rate(agent_task_total[5m])")], exported_series())
    assert len(problems) == 1 and "rule 'x'" in problems[0]


def test_a_name_pattern_is_reported_rather_than_passed() -> None:
    problems = unknown_metrics([("panel", '{__name__=~"agent_.*"}')], exported_series())
    assert len(problems) == 1 and "__name__ pattern" in problems[0]


def test_every_metric_an_alert_rule_uses_is_exported() -> None:
    assert unknown_metrics(alert_expressions(_alerts()), exported_series()) == []


def test_alert_rules_are_well_formed() -> None:
    rules_file = _alerts()
    assert set(rules_file) == {"groups"}
    names = []
    for group in rules_file["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
            names.append(rule["alert"])
            assert rule["for"].endswith(("s", "m", "h")), rule["alert"]
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
            # Every rule must compare or select; a bare vector would always fire.
            assert any(op in rule["expr"] for op in (">", "<", "==")), rule["alert"]
    assert len(names) == len(set(names))


def test_the_design_documents_alerts_are_all_there() -> None:
    rules = {rule["alert"]: rule for group in _alerts()["groups"] for rule in group["rules"]}
    wanted = {
        "AgentlogHighApiErrorRate": "agentlog_http_requests_total",  # high error rate
        "AgentlogHighApiLatency": "agentlog_http_request_duration_seconds_bucket",  # p95 > 2 s
        "AgentlogHighMemoryUsage": "process_resident_memory_bytes",
        "AgentlogServiceDown": "up",
        "AgentlogProjectionLag": "agentlog_projection_lag_seconds",
        "AgentlogOrgBudgetAt80Percent": "agentlog_budget_spent_usd",
        "AgentlogDeadLetterGrowing": "agentlog_dead_lettered_records_total",
    }
    for alert, metric in wanted.items():
        assert metric in metric_names(rules[alert]["expr"]), alert
    assert "histogram_quantile(0.95" in rules["AgentlogHighApiLatency"]["expr"]
    assert rules["AgentlogHighApiLatency"]["expr"].rstrip().endswith("> 2")
    assert rules["AgentlogOrgBudgetAt80Percent"]["expr"].rstrip().endswith(">= 0.8")
