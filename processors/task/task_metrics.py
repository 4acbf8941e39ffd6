"""The task metrics, read off the events the runner has just written.

Counting what was acknowledged on the log (not what the shell attempted) makes the counters equal
the log: ``agent_task_total`` counts the terminal events, ``agent_token_usage_total`` the tokens
of the written ``LlmCallCompleted`` events. The decider stays free of metrics; the runner calls
:func:`observe_written` after each acknowledged write.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime

from schemas.events import (
    MAIN_AGENT,
    Event,
    LlmCallCompleted,
    SubtaskCompleted,
    SubtaskFailed,
    SubtaskStarted,
    TaskAccepted,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    ToolCallCompleted,
    ToolCallDenied,
    ToolCallFailed,
)
from streams.metrics import (
    AGENT_RESPONSE_LATENCY,
    AGENT_TASKS,
    AGENT_TOKEN_USAGE,
    LLM_COST,
    TOOL_CALLS,
    agent_kind,
)

# The decider's rule of a ToolCallDenied that records a human rejecting the call.
APPROVAL_REJECTED_RULE = "approval-rejected"
# Agents whose start this process wrote and whose answer it has not: (task id, agent id) -> start.
# Bounded, because a task may move to another worker (rebalance) and never end here.
MAX_TRACKED_AGENTS = 100_000
_started: OrderedDict[tuple[str, str], datetime] = OrderedDict()


def observe_written(events: Iterable[Event], mode: str) -> None:
    """Update the task metrics for ``events``, just acknowledged by Kafka; ``mode`` is the task's
    execution mode after them (lower case, as :data:`streams.metrics.EXECUTION_MODES`). An agent's
    response latency is observed only when this process also wrote its start (a task resumed after
    a restart on another worker is not timed)."""
    for event in events:
        envelope, payload = event.envelope, event.payload
        at = envelope.occurred_at
        match payload:
            case TaskAccepted():
                _track((envelope.task_id, MAIN_AGENT), at)
            case SubtaskStarted():
                _track((envelope.task_id, payload.agent_id), at)
            case SubtaskCompleted():
                _answered(envelope.task_id, payload.agent_id, at, mode)
            case SubtaskFailed():
                _started.pop((envelope.task_id, payload.agent_id), None)
            case TaskCompleted():
                _answered(envelope.task_id, MAIN_AGENT, at, mode)
                AGENT_TASKS.labels(outcome="completed").inc()
            case TaskFailed() | TaskCancelled():
                _forget(envelope.task_id)
                AGENT_TASKS.labels(outcome="failed" if isinstance(payload, TaskFailed) else "cancelled").inc()
            case LlmCallCompleted() if not payload.cache_hit:
                AGENT_TOKEN_USAGE.labels(envelope.org_id, payload.model, "prompt").inc(payload.prompt_tokens)
                AGENT_TOKEN_USAGE.labels(envelope.org_id, payload.model, "completion").inc(
                    payload.completion_tokens
                )
                LLM_COST.labels(envelope.org_id, payload.model).inc(payload.cost_usd)
            case ToolCallCompleted():
                TOOL_CALLS.labels(payload.tool, "completed").inc()
            case ToolCallFailed() if not payload.retryable:
                # A retryable failure is followed by another attempt: the call has not ended.
                TOOL_CALLS.labels(payload.tool, "failed").inc()
            case ToolCallDenied():
                outcome = "rejected" if payload.rule == APPROVAL_REJECTED_RULE else "denied"
                TOOL_CALLS.labels(payload.tool, outcome).inc()


def _track(key: tuple[str, str], at: datetime) -> None:
    _started[key] = at
    while len(_started) > MAX_TRACKED_AGENTS:
        _started.popitem(last=False)


def _answered(task_id: str, agent_id: str, at: datetime, mode: str) -> None:
    started = _started.pop((task_id, agent_id), None)
    if started is not None:
        AGENT_RESPONSE_LATENCY.labels(agent_kind(agent_id), mode).observe(
            max(0.0, (at - started).total_seconds())
        )
    if agent_id == MAIN_AGENT:
        _forget(task_id)


def _forget(task_id: str) -> None:
    for key in [key for key in _started if key[0] == task_id]:
        del _started[key]
