"""The effect interpreters: the runner's policy, tools and budget ledger, bound to their packages.

The decider asks for effects as data; these classes perform them with the platform's parts (the
Cedar policy engine, the tool registry and sandbox, the Redis budget ledger) and answer with the
decider's commands. :func:`build_runner` wires a :class:`TaskRunner` from the settings.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from processors.llm.budget import BudgetLedger, BudgetLedgerUnavailable
from processors.llm.cost import estimate_usd
from processors.llm.gateway import LlmGateway
from processors.llm.routing import routes
from processors.policy.decision import PolicyRequest
from processors.policy.engine import PolicyEngine
from processors.policy.loader import load_engine
from processors.task.commands import (
    AuthorizeTool,
    RecordBudgetVerdict,
    RecordPolicyDecision,
    RecordToolResult,
    ReserveBudget,
)
from processors.task.decider import ANSWER_TOKENS, CHARS_PER_TOKEN
from processors.task.retry import is_transient
from processors.task.runner import TaskRunner
from processors.task.state import TaskState
from processors.tools.contract import SandboxLimits, ToolArgumentsError, ToolContext, ToolLimits, ToolSettings
from processors.tools.execute import TRANSIENT_ERROR_TYPES, execute
from processors.tools.files import workspace_for
from processors.tools.registry import ToolRegistry, default_registry, parse_arguments
from schemas.events import LlmCallRequested, ToolCallRequested
from streams.producer import EventProducer
from streams.settings import Settings
from streams.topics import EVENTS, TASK_STATE

log = logging.getLogger(__name__)

INVALID_ARGUMENTS_RULE = "invalid-arguments"
LEDGER_UNAVAILABLE = "the org budget ledger (Redis) is unavailable, so the call is not made (fail closed)"


class PolicyAuthorizer:
    """Tool-call authorization by the Cedar policy engine (default deny)."""

    def __init__(self, engine: PolicyEngine) -> None:
        self._engine = engine

    def authorize(self, effect: AuthorizeTool, state: TaskState) -> RecordPolicyDecision:
        request = effect.request
        try:
            arguments = parse_arguments(request.arguments_json)
        except ToolArgumentsError as exc:
            # Arguments a policy cannot read are arguments it cannot allow.
            return RecordPolicyDecision(
                idempotency_key=request.idempotency_key,
                effect="deny",
                rule=INVALID_ARGUMENTS_RULE,
                reason=str(exc),
            )
        decision = self._engine.decide(
            PolicyRequest(
                org_id=state.org_id,
                user_id=state.user_id,
                role=effect.role,
                tool=request.tool,
                arguments=arguments,
                task_id=state.task_id,
            )
        )
        return RecordPolicyDecision(
            idempotency_key=request.idempotency_key,
            effect=decision.effect.value,
            rule=decision.rule,
            reason=decision.reason,
        )


class RegistryTools:
    """Tool calls through the tool registry (built-ins and plugins), each in its task's workspace."""

    def __init__(
        self,
        registry: ToolRegistry,
        settings: ToolSettings,
        workspace_root: Path,
        limits: ToolLimits | None = None,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._limits = limits or ToolLimits()
        self._root = workspace_root
        # Owner-only: each task's workspace is 0700, and so is the directory that lists them.
        workspace_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        workspace_root.chmod(0o700)

    def names(self) -> tuple[str, ...]:
        return tuple(self._registry.names())

    def is_local(self, tool: str) -> bool:
        # An unknown tool runs nothing (its outcome is an error for the model): local too.
        return tool not in self._registry or self._registry.get(tool).pure

    def workspace(self, task_id: str) -> Path:
        return workspace_for(self._root, task_id)

    def release(self, task_id: str) -> None:
        """Remove an ended task's workspace (the tools' scratch space; what they did is in the events)."""
        workspace = self.workspace(task_id)
        if workspace.exists():
            shutil.rmtree(workspace)

    async def run(self, request: ToolCallRequested, state: TaskState) -> RecordToolResult:
        context = ToolContext(
            task_id=state.task_id,
            org_id=state.org_id,
            user_id=state.user_id,
            role=state.user_role,
            workspace=self.workspace(state.task_id),
            limits=self._limits,
            settings=self._settings,
            idempotency_key=request.idempotency_key,
        )
        outcome = await execute(request.tool, request.arguments_json, context, registry=self._registry)
        return RecordToolResult(
            idempotency_key=request.idempotency_key,
            output=outcome.output,
            error_type=outcome.error_type,
            error=outcome.error,
            latency_ms=outcome.latency_ms,
            truncated=outcome.truncated,
            quarantined=outcome.quarantined,
            findings=tuple(outcome.findings),
            retryable=outcome.error_type in TRANSIENT_ERROR_TYPES
            or (outcome.error_type is not None and is_transient(outcome.error_type)),
        )


class OrgBudgetLedger:
    """The org's daily USD budget, reserved in Redis before each LLM call (idempotent per call)."""

    def __init__(self, ledger: BudgetLedger, gateway: LlmGateway) -> None:
        self._ledger = ledger
        self._gateway = gateway

    async def reserve(self, effect: ReserveBudget, state: TaskState, now: datetime) -> RecordBudgetVerdict:
        request = effect.request
        # Priced at the provider the gateway would try first for the tier, as the gateway does.
        [first, *_] = routes(self._gateway.providers, request.tier, lambda _: True)
        estimate = estimate_usd(first.price, effect.estimated_tokens * CHARS_PER_TOKEN, ANSWER_TOKENS)
        day = now.date()
        scope_id = f"{state.org_id}/{day.isoformat()}"
        common: dict[str, Any] = {
            "idempotency_key": request.idempotency_key,
            "scope_id": scope_id,
            "tokens": effect.estimated_tokens,
            "cost_usd": estimate,
            "used_tokens": state.total_tokens,
            "limit_usd": effect.limit_usd,
        }
        try:
            verdict = await self._ledger.reserve(
                state.org_id, day, request.idempotency_key, estimate, effect.limit_usd
            )
        except BudgetLedgerUnavailable as exc:
            log.error("%s: %s", LEDGER_UNAVAILABLE, exc)
            return RecordBudgetVerdict(**common, used_usd=0.0, exceeded=True, reason=LEDGER_UNAVAILABLE)
        return RecordBudgetVerdict(
            **common,
            used_usd=verdict.used_before_usd,
            exceeded=verdict.exceeded,
            threshold_crossed=0.8 if verdict.crossed_80_percent else None,
            reason=None if verdict.allowed else verdict.reason,
        )

    async def settle(
        self, request: LlmCallRequested, state: TaskState, cost_usd: float, now: datetime
    ) -> None:
        """Replace the call's reserved estimate by what it cost (a failed call costs nothing)."""
        try:
            await self._ledger.settle(state.org_id, now.date(), request.idempotency_key, cost_usd)
        except BudgetLedgerUnavailable as exc:
            # The estimate stays charged: the org's spend is over-counted, never under-counted.
            log.error("could not settle %s: %s", request.idempotency_key, exc)


def build_runner(settings: Settings, producer: EventProducer) -> TaskRunner:
    """The processor's runner: the LLM gateway, the policy engine, the tools and the budget ledger."""
    gateway = LlmGateway(settings)
    tools = RegistryTools(
        default_registry(),
        ToolSettings(
            http_allow_hosts=tuple(settings.tool_http_allow_hosts), postgres_dsn=settings.postgres_dsn
        ),
        Path(settings.workspace_dir),
        ToolLimits(
            call_seconds=max(60.0, settings.sandbox_wall_seconds + 5),
            sandbox=SandboxLimits(
                cpu_seconds=settings.sandbox_cpu_seconds, wall_seconds=settings.sandbox_wall_seconds
            ),
        ),
    )
    ledger = None
    if settings.org_daily_budget_usd is not None or settings.org_budgets_usd:
        ledger = OrgBudgetLedger(
            BudgetLedger(Redis.from_url(settings.redis_url, socket_timeout=1.0)), gateway
        )
    return TaskRunner(
        producer=producer,
        events_topic=EVENTS.name(settings),
        state_topic=TASK_STATE.name(settings),
        gateway=gateway,
        tools=tools,
        policy=PolicyAuthorizer(load_engine(Path(settings.policy_dir) if settings.policy_dir else None)),
        limits=settings,
        ledger=ledger,
        stream_tokens=settings.llm_stream_tokens,
    )
