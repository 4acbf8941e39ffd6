"""The metric names that PromQL expressions of the deploy files refer to, and the names the
platform's processes can export. Shared by the dashboard, alert and Kubernetes tests."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client import REGISTRY

import api.routes.ops  # noqa: F401  (registers the HTTP request metrics)
import projections.lag  # noqa: F401  (registers the projection lag gauges)
import streams.metrics  # noqa: F401  (registers the catalogue)

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"

# Series Prometheus writes itself, not any process: the scrape's health and the alert states.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"}

# Grafana variables in an expression: the interval ones stand for a duration, others sit in quotes.
_GRAFANA_DURATION = re.compile(
    r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}"
)
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
# prometheus-adapter's Go templates.
_ADAPTER_TEMPLATE = {"<<.Series>>": "adapter_series_placeholder", "{<<.LabelMatchers>>}": ""}
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<expr>.+),\s*)?(?P<label>\w+)\s*\)\s*$")
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$")


def exported_series() -> set[str]:
    """Every series name a process importing the platform's metric modules exposes: counters with
    ``_total`` (and ``_created``), histograms with ``_bucket``/``_sum``/``_count``, plus the default
    collectors' ``process_*`` and ``python_*`` series."""
    # A family's bare name is a series only for gauges (and info/untyped): ``rate(x_seconds[5m])``
    # over a histogram ``x_seconds`` selects nothing, so it must not count as known.
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(sample.name for sample in family.samples)
        names.update(f"{family.name}{suffix}" for suffix in suffixes.get(family.type, ("",)))
    return names | SYNTHETIC


def promql_for_parser(expr: str) -> str:
    """``expr`` with Grafana's variables and the adapter's templates replaced by parseable text."""
    for template, replacement in _ADAPTER_TEMPLATE.items():
        expr = expr.replace(template, replacement)
    expr = _GRAFANA_DURATION.sub("5m", expr)
    return _GRAFANA_VARIABLE.sub("grafana_variable", expr)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects, by name or by ``{__name__="..."}``; raises ValueError when
    it does not parse or selects by a ``__name__`` regex (which no check could resolve)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    if matcher.op != promql_parser.MatchOp.Equal:
                        raise ValueError(f"selects metrics by a __name__ pattern: {expr}")
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(promql_for_parser(expr)), visit)
    return names - {"adapter_series_placeholder"}


def grafana_variable_query(query: str) -> str | None:
    """The PromQL inside a Grafana ``label_values(...)``/``query_result(...)`` variable query."""
    if match := _LABEL_VALUES.match(query):
        return match.group("expr")
    if match := _QUERY_RESULT.match(query):
        return match.group("expr")
    return query


def _panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows hold their panels


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, expr)`` for every PromQL expression of a dashboard: panel targets and variables."""
    found = []
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"panel {panel.get('title')!r}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text: str = query["query"] if isinstance(query, dict) else query
        expr = grafana_variable_query(text)
        if expr:
            found.append((f"variable {variable['name']!r}", expr))
    return found


def alert_expressions(rules_file: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"rule {rule.get('alert') or rule.get('record')!r}", rule["expr"])
        for group in rules_file["groups"]
        for rule in group["rules"]
    ]


def adapter_expressions(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The series queries and metrics queries of a prometheus-adapter config."""
    found = []
    for kind in ("rules", "externalRules", "resourceRules"):
        for rule in config.get(kind) or []:
            found.append((f"{kind} seriesQuery", rule["seriesQuery"]))
            found.append((f"{kind} metricsQuery", rule["metricsQuery"]))
    return found


def unknown_metrics(expressions: Iterable[tuple[str, str]], known: set[str]) -> list[str]:
    """One line per expression that refers to a metric not in ``known`` (or does not parse)."""
    problems = []
    for where, expr in expressions:
        try:
            missing = metric_names(expr) - known
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if missing:
            problems.append(f"{where}: unknown metric(s) {sorted(missing)} in {expr!r}")
    return problems


def load_yaml_documents(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]
