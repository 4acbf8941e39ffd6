"""The catalogue of agentlog's Prometheus metrics: one place that names every series a process exports.

Every metric is a ``prometheus_client`` object on the default registry, so a process that imports
this module exports the families (a labelled metric with no recorded child shows only its HELP and
TYPE lines). Names follow the Prometheus conventions: base units (seconds, bytes, USD), ``_total``
on counters, and the ``agentlog_`` prefix except the three ``agent_*`` metrics the design documents
name. Labels are bounded: ``org`` by the installation's tenants, ``model`` and ``provider`` by the
providers file, ``tool`` by the tool registry, ``group``/``topic``/``partition`` by the topic
catalogue; a task, session, agent or call id is never a label.

:data:`CATALOGUE` says for each metric which component exports it; it is the spec the processes are
wired against (``docs/operations.md`` shows it as a table). Two metrics are defined where they are
measured and are listed in :data:`DEFINED_ELSEWHERE` instead: the projection lag gauges
(``projections/lag.py``) and the API's request metrics (``api/routes/ops.py``). The API serves
``/metrics`` on its own port; every worker component serves it with :func:`serve_worker_metrics`.
Beyond these, ``prometheus_client``'s default collectors give every process ``process_*`` (memory,
CPU, open files) and ``python_*`` series.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

log = logging.getLogger(__name__)

# Where each component serves /metrics when it is not the API (which serves it on its own port).
DEFAULT_METRICS_PORT = 9100

# Component names as in `agentlog run <component>`.
PROCESSOR = "processor"
PROJECTOR_POSTGRES = "projector-postgres"
PROJECTOR_ELASTICSEARCH = "projector-elasticsearch"
API = "api"
AUDITOR = "auditor"
# The components that serve /metrics with serve_worker_metrics (the API serves it on its own port).
WORKER_COMPONENTS = (PROCESSOR, PROJECTOR_POSTGRES, PROJECTOR_ELASTICSEARCH, AUDITOR)

# Label values, so the wiring step and the dashboards agree on them.
AGENT_KINDS = ("main", "sub")
EXECUTION_MODES = ("simple", "standard", "complex")
TASK_OUTCOMES = ("completed", "failed", "cancelled")
TOKEN_KINDS = ("prompt", "completion")
CACHE_RESULTS = ("hit", "miss")
TOOL_OUTCOMES = ("completed", "failed", "denied", "rejected")
# The gauge value of each circuit-breaker state (processors/llm/breaker.py BreakerStatus values).
BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}

_SECONDS_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# An agent's answer spans several LLM and tool calls, and possibly a human approval.
_SECONDS_AGENT = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)

AGENT_RESPONSE_LATENCY = Histogram(
    "agent_response_latency_seconds",
    "Seconds from an agent's start (the task accepted, for the main agent; its subtask started, for a"
    " sub-agent) to its final answer, by agent kind (main|sub) and the task's execution mode.",
    ["agent", "mode"],
    buckets=_SECONDS_AGENT,
)
AGENT_TOKEN_USAGE = Counter(
    "agent_token_usage_total",
    "Tokens of the LLM calls answered by a provider (cache hits use none), by org, model and kind"
    " (prompt|completion).",
    ["org", "model", "kind"],
)
AGENT_TASKS = Counter(
    "agent_task_total",
    "Tasks that ended, by outcome (completed|failed|cancelled); the success rate is completed over all.",
    ["outcome"],
)
LLM_COST = Counter(
    "agentlog_llm_cost_usd_total",
    "US dollars of the LLM calls answered by a provider, at the providers file's prices, by org and model.",
    ["org", "model"],
)
LLM_CALL_DURATION = Histogram(
    "agentlog_llm_call_duration_seconds",
    "Seconds of each attempt of an LLM call at a provider, successful or not (cache hits excluded).",
    ["provider"],
    buckets=_SECONDS_FAST,
)
LLM_CALL_ERRORS = Counter(
    "agentlog_llm_call_errors_total",
    "Failed attempts of LLM calls at a provider, by the error's type (e.g. APITimeoutError,"
    " RateLimitError, EmptyResponse); the error ratio is this over the duration histogram's count.",
    ["provider", "reason"],
)
LLM_CACHE_REQUESTS = Counter(
    "agentlog_llm_cache_requests_total",
    "Prompt-cache lookups by result (hit: exact or semantic; miss: includes Redis being away).",
    ["result"],
)
CIRCUIT_BREAKER_STATE = Gauge(
    "agentlog_circuit_breaker_state",
    "The circuit breaker of a provider in this process: 0 closed, 1 half-open, 2 open.",
    ["provider"],
)
TOOL_CALLS = Counter(
    "agentlog_tool_calls_total",
    "Tool calls that ended, by tool and outcome (completed|failed|denied by policy|rejected by a human).",
    ["tool", "outcome"],
)
# No org label: the API serves this on its public port, where any caller may scrape it, and org
# names are another tenant's business (tests/integration/test_tenancy.py). Per-org counts are
# GET /v1/approvals, scoped to the caller's org.
APPROVALS_PENDING = Gauge(
    "agentlog_approvals_pending",
    "Tool calls waiting for a human approval, in all orgs (the approvals read model).",
)
BUDGET_SPENT = Gauge(
    "agentlog_budget_spent_usd",
    "US dollars the org has spent and reserved today (UTC) against its daily budget; the same value in"
    " every processor, so aggregate with max.",
    ["org"],
)
BUDGET_LIMIT = Gauge(
    "agentlog_budget_limit_usd",
    "The org's daily budget in US dollars (unset for an org without one).",
    ["org"],
)
CONSUMER_LAG = Gauge(
    "agentlog_consumer_lag_records",
    "Records between a consumer group's committed offset and the partition's end (last stable offset).",
    ["group", "topic", "partition"],
)
DEAD_LETTERED = Counter(
    "agentlog_dead_lettered_records_total",
    "Records parked on the dead-letter topic by this process, by the topic they came from.",
    ["source_topic"],
)


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the catalogue and the components that export it."""

    name: str  # the name in the exposition format (counters with their ``_total``)
    metric: MetricWrapperBase | None  # None: defined in the module named in ``defined_in``
    exported_by: tuple[str, ...]
    measures: str
    defined_in: str = "streams/metrics.py"


CATALOGUE: tuple[MetricSpec, ...] = (
    MetricSpec(
        "agent_response_latency_seconds",
        AGENT_RESPONSE_LATENCY,
        (PROCESSOR,),
        "histogram: an agent's start to its answer, by agent (main|sub) and mode (simple|standard|complex)",
    ),
    MetricSpec(
        "agent_token_usage_total",
        AGENT_TOKEN_USAGE,
        (PROCESSOR,),
        "counter: provider-answered tokens by org, model and kind (prompt|completion)",
    ),
    MetricSpec(
        "agent_task_total", AGENT_TASKS, (PROCESSOR,), "counter: ended tasks by outcome (success rate)"
    ),
    MetricSpec("agentlog_llm_cost_usd_total", LLM_COST, (PROCESSOR,), "counter: LLM spend by org and model"),
    MetricSpec(
        "agentlog_llm_call_duration_seconds",
        LLM_CALL_DURATION,
        (PROCESSOR,),
        "histogram: each attempt at a provider, by provider",
    ),
    MetricSpec(
        "agentlog_llm_call_errors_total",
        LLM_CALL_ERRORS,
        (PROCESSOR,),
        "counter: failed attempts by provider and reason (error type)",
    ),
    MetricSpec(
        "agentlog_llm_cache_requests_total",
        LLM_CACHE_REQUESTS,
        (PROCESSOR,),
        "counter: prompt-cache lookups by result (hit|miss)",
    ),
    MetricSpec(
        "agentlog_circuit_breaker_state",
        CIRCUIT_BREAKER_STATE,
        (PROCESSOR,),
        "gauge: 0 closed, 1 half-open, 2 open, per provider and process",
    ),
    MetricSpec(
        "agentlog_tool_calls_total",
        TOOL_CALLS,
        (PROCESSOR,),
        "counter: ended tool calls by tool and outcome (completed|failed|denied|rejected)",
    ),
    MetricSpec(
        "agentlog_approvals_pending",
        APPROVALS_PENDING,
        (API,),
        "gauge: tool calls waiting for a human, by org (refreshed from the read model)",
    ),
    MetricSpec(
        "agentlog_budget_spent_usd",
        BUDGET_SPENT,
        (PROCESSOR,),
        "gauge: today's spend and reservations by org (read back from Redis after each reservation)",
    ),
    MetricSpec(
        "agentlog_budget_limit_usd", BUDGET_LIMIT, (PROCESSOR,), "gauge: the org's daily budget (settings)"
    ),
    MetricSpec(
        "agentlog_consumer_lag_records",
        CONSUMER_LAG,
        (API,),
        "gauge: committed offset to end, per group, topic and partition (refreshed with the projection lag)",
    ),
    MetricSpec(
        "agentlog_dead_lettered_records_total",
        DEAD_LETTERED,
        (PROCESSOR, PROJECTOR_POSTGRES, PROJECTOR_ELASTICSEARCH),
        "counter: records parked on the dead-letter topic, by source topic",
    ),
    MetricSpec(
        "agentlog_projection_lag_events",
        None,
        (API,),
        "gauge: records a projector has not applied, by projector",
        defined_in="projections/lag.py",
    ),
    MetricSpec(
        "agentlog_projection_lag_seconds",
        None,
        (API,),
        "gauge: age of the oldest unapplied record, by projector",
        defined_in="projections/lag.py",
    ),
    MetricSpec(
        "agentlog_http_requests_total",
        None,
        (API,),
        "counter: HTTP requests by method, route template and status",
        defined_in="api/routes/ops.py",
    ),
    MetricSpec(
        "agentlog_http_request_duration_seconds",
        None,
        (API,),
        "histogram: time to the response start, by method and route template",
        defined_in="api/routes/ops.py",
    ),
)

# Importing these modules registers their metrics (they need the API's and projections' dependencies,
# which a worker of another kind need not load, so this module does not import them).
DEFINED_ELSEWHERE: dict[str, str] = {spec.name: spec.defined_in for spec in CATALOGUE if spec.metric is None}


def agent_kind(agent_id: str, main_agent: str = "main") -> str:
    """The ``agent`` label of an agent: ``main`` or ``sub`` (a sub-agent's id is its subtask id,
    one per subtask, so it would grow the series without bound)."""
    return "main" if agent_id == main_agent else "sub"


def serve_metrics(
    port: int = DEFAULT_METRICS_PORT, *, host: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` as ``/metrics`` on ``host:port`` from a daemon thread, for a worker process
    that has no HTTP server of its own (port 0: any free port, read it from ``server.server_port``).
    Returns the server and its thread; ``server.shutdown()`` stops it."""
    return start_http_server(port, addr=host, registry=registry)


def serve_worker_metrics(port: int, component: str, *, host: str = "0.0.0.0") -> int | None:
    """Serve ``/metrics`` for a worker process; the port it listens on, or None when it cannot bind.

    A port already taken (another platform on the host) is logged, not raised: the worker's work
    matters more than its metrics, and its scrape target shows as down.
    """
    try:
        server, _ = serve_metrics(port, host=host)
    except OSError as exc:
        log.error(
            "%s: cannot serve /metrics on %s:%d (%s); running without metrics", component, host, port, exc
        )
        return None
    log.info("%s: /metrics on http://%s:%d/metrics", component, host, server.server_port)
    return int(server.server_port)
