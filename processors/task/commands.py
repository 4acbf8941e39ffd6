"""What the task shell tells the decider (commands) and what the decider asks the shell to do (effects).

Commands carry everything that varies — model answers, tool outputs, policy verdicts, budget
verdicts, human decisions, the time and retry schedules — so that ``decide`` stays pure. Effects are
data: the shell performs them and reports back with a command.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import CacheKind, LlmCallRequested, ToolCallRequested


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True)


class StartTask(_Command):
    """Accept a submitted task: choose its mode and ask the model for the first step."""

    provider: str
    model: str
    offline: bool
    max_steps: int = Field(ge=1)
    tools: tuple[str, ...] = ()
    now: datetime | None = None  # None: no delay check (the task has no not_before)
    max_attempts: int = Field(default=3, ge=1)
    max_parallel: int = Field(default=3, ge=1)
    token_budget: int | None = None  # the platform default; the submission's own budget wins
    org_budget_usd: float | None = None  # the org's daily USD budget, when one is configured


class ToolCall(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    name: str
    arguments_json: str


class RecordModelResponse(_Command):
    """The gateway's answer to a pending LLM call."""

    idempotency_key: str
    model: str
    provider: str | None = None  # None: the provider the request named (no fallback happened)
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float = 0.0
    latency_ms: float
    cache_kind: CacheKind | None = None  # set when the answer came from the prompt cache
    attempt: int = 1  # the request's attempt this answers (a late answer to an earlier one is stale)
    response_json: str


class RecordModelFailure(_Command):
    """The gateway gave up on a call; ``retryable`` with ``retry_at`` asks for a durable retry."""

    idempotency_key: str
    error_type: str
    error: str
    latency_ms: float
    attempt: int = 1  # the request's attempt this answers
    retryable: bool = False
    retry_at: datetime | None = None  # backoff with jitter, computed by the shell


class RecordPolicyDecision(_Command):
    """The policy engine's verdict on a requested tool call."""

    idempotency_key: str
    effect: Literal["allow", "deny", "require_approval"]
    rule: str
    reason: str = ""


class RecordToolResult(_Command):
    """A tool's output, or its error when ``error_type`` is set."""

    idempotency_key: str
    output: str = ""
    error_type: str | None = None
    error: str | None = None
    latency_ms: float
    truncated: bool = False
    quarantined: bool = False
    findings: tuple[str, ...] = ()
    attempt: int = 1  # the call's attempt this answers (a late result of an earlier one is stale)
    retryable: bool = False
    retry_at: datetime | None = None


class DecideApproval(_Command):
    """A reviewer's decision on a waiting tool call."""

    approval_id: str
    approved: bool
    decided_by: str
    reason: str


class CancelTask(_Command):
    reason: str
    cancelled_by: str


class RecordBudgetVerdict(_Command):
    """The org's daily budget ledger answered a reservation for a pending LLM call."""

    idempotency_key: str
    scope_id: str  # <org id>/<UTC date>
    tokens: int
    cost_usd: float
    used_tokens: int
    used_usd: float
    limit_usd: float | None
    exceeded: bool
    threshold_crossed: float | None = None  # e.g. 0.8 when this reservation crossed 80 %
    reason: str | None = None  # why it was refused, when not simply spent (e.g. the ledger is down)


class ForkTask(_Command):
    """Continue a task whose history so far is a copy of another's first ``prefix_events`` events.

    The shell has copied the prefix; the decision records ``TaskForked`` with the changes and asks
    again, under this task's idempotency keys, for every effect the prefix left pending.
    """

    source_task_id: str
    prefix_events: int = Field(ge=1)
    source_last_event_id: str | None = None
    forked_by: str
    model: str | None = None
    input: str | None = None
    overrides: dict[str, str] = Field(default_factory=dict)


Command = (
    StartTask
    | ForkTask
    | RecordModelResponse
    | RecordModelFailure
    | RecordPolicyDecision
    | RecordToolResult
    | DecideApproval
    | CancelTask
    | RecordBudgetVerdict
)


# -- effects ---------------------------------------------------------------------------------


class _Effect(BaseModel):
    model_config = ConfigDict(frozen=True)


class CallModel(_Effect):
    """Perform a recorded LLM request with the agent's conversation, not before ``not_before``."""

    request: LlmCallRequested
    messages_json: str
    not_before: datetime | None = None


class ReserveBudget(_Effect):
    """Reserve the org's daily budget for a pending LLM call before it is made."""

    request: LlmCallRequested
    estimated_tokens: int
    limit_usd: float


class AuthorizeTool(_Effect):
    """Ask the policy engine whether a requested tool call may run."""

    request: ToolCallRequested
    role: str | None


class RunTool(_Effect):
    """Run an authorized tool call, not before ``not_before`` (a scheduled retry)."""

    request: ToolCallRequested
    attempt: int = 1
    not_before: datetime | None = None


Effect = CallModel | ReserveBudget | AuthorizeTool | RunTool
