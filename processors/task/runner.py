"""The task shell: feeds the decider commands, performs the effects it asks for, records everything.

Each decision's events, together with the state they lead to (a ``CheckpointSaved`` on the
task-state topic), go out in one batch that Kafka acknowledges before any effect with consequences
outside this process (an LLM call, an impure tool) is started, so a crash never loses a request
and never hides a result. Local effects that are safe to repeat (a policy decision, a pure tool, an
idempotent budget reservation) are performed at once and recorded in the same batch as the
request they answer.

External effects run concurrently (the subtasks of a plan call their models in parallel); the
runner waits for the first to finish, or for a command from outside (cancellation, an approval
decision) on the task's inbox, decides, and carries on until the task ends or waits for a human.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from processors.task.commands import (
    AuthorizeTool,
    CallModel,
    Command,
    Effect,
    RecordBudgetVerdict,
    RecordModelFailure,
    RecordModelResponse,
    RecordPolicyDecision,
    RecordToolResult,
    ReserveBudget,
    RunTool,
    StartTask,
)
from processors.task.decider import decide, evolve, pending_effects
from processors.task.history import checkpoint, stamp
from processors.task.retry import is_transient, retry_at
from processors.task.state import TERMINAL, Status, TaskState
from processors.task.task_metrics import observe_written
from schemas.events import Event, LlmCallRequested, ToolCallRequested
from streams import tracing
from streams.producer import EventProducer

log = logging.getLogger(__name__)

PRODUCER = "agentlog-processor"
PRODUCER_VERSION = "0.1.0"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class ModelGateway(Protocol):
    offline: bool
    provider: str
    model: str

    async def complete(
        self, request: LlmCallRequested, messages_json: str, *, stream_task_id: str | None = None
    ) -> RecordModelResponse | RecordModelFailure: ...


class ToolPolicy(Protocol):
    def authorize(self, effect: AuthorizeTool, state: TaskState) -> RecordPolicyDecision: ...


class ToolRunner(Protocol):
    def names(self) -> tuple[str, ...]: ...

    def is_local(self, tool: str) -> bool:
        """Pure and in-process: safe to run before its request is durable (re-running changes nothing)."""
        ...

    async def run(self, request: ToolCallRequested, state: TaskState) -> RecordToolResult: ...

    def release(self, task_id: str) -> None:
        """The task ended: free what its tools held (its workspace)."""
        ...


class BudgetLedger(Protocol):
    async def reserve(
        self, effect: ReserveBudget, state: TaskState, now: datetime
    ) -> RecordBudgetVerdict: ...

    async def settle(
        self, request: LlmCallRequested, state: TaskState, cost_usd: float, now: datetime
    ) -> None: ...


class RunnerLimits(Protocol):
    """The platform's limits a task starts with (``streams.settings.Settings`` is one)."""

    max_steps: int
    max_attempts: int
    max_parallel: int
    task_token_budget: int | None

    def org_budget_for(self, org_id: str) -> float | None: ...


def _effect_key(effect: Effect) -> str:
    match effect:
        case CallModel():
            return f"llm:{effect.request.idempotency_key}"
        case ReserveBudget():
            return f"budget:{effect.request.idempotency_key}"
        case AuthorizeTool():
            return f"policy:{effect.request.idempotency_key}"
        case RunTool():
            return f"tool:{effect.request.idempotency_key}"
    raise TypeError(f"unknown effect {effect!r}")


class TaskRunner:
    """Runs one task from its current state until it ends or waits for a human decision."""

    def __init__(
        self,
        *,
        producer: EventProducer,
        events_topic: str,
        gateway: ModelGateway,
        tools: ToolRunner,
        policy: ToolPolicy,
        limits: RunnerLimits,
        ledger: BudgetLedger | None = None,
        state_topic: str | None = None,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        stream_tokens: bool = False,
    ) -> None:
        self._producer = producer
        self._topic = events_topic
        self._state_topic = state_topic
        self._gateway = gateway
        self._tools = tools
        self._policy = policy
        self._limits = limits
        self._ledger = ledger
        self._clock = clock
        self._rng = rng or random.Random()
        # Live token views (Redis pub/sub) cost a streamed call; only the whole answer is recorded.
        self._stream_tokens = stream_tokens

    async def run(
        self,
        state: TaskState,
        save: Callable[[TaskState], None],
        *,
        traceparent: str | None = None,
        inbox: asyncio.Queue[Command] | None = None,
        commands: Sequence[Command] = (),
    ) -> TaskState:
        """Advance ``state``; ``save`` is called after every acknowledged write.

        ``commands`` are decided first (e.g. the approval decision that woke a waiting task);
        ``inbox`` delivers commands that arrive while the task runs (cancellation, approvals).
        """
        batch = _Batch(state)
        for command in commands:
            self._decide(command, batch)
        if batch.state.status is Status.SUBMITTED:
            self._decide(self._start_command(batch.state), batch)
        in_flight: dict[str, asyncio.Task[Command]] = {}
        inbox_get: asyncio.Task[Command] | None = None
        try:
            while batch.state.status is Status.RUNNING:
                if await self._step_local(batch, in_flight, traceparent, save):
                    continue
                if not in_flight:
                    break  # waiting for a human decision (or a delayed start)
                await self._write(batch, save, traceparent)
                waiting: set[asyncio.Task[Command]] = set(in_flight.values())
                if inbox is not None:
                    inbox_get = inbox_get or asyncio.create_task(inbox.get())
                    waiting.add(inbox_get)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for key, task in list(in_flight.items()):
                    if task in done:
                        del in_flight[key]
                        self._decide(task.result(), batch)
                if inbox_get is not None and inbox_get in done:
                    self._decide(inbox_get.result(), batch)
                    inbox_get = None
        finally:
            # A cancelled or failed task abandons what is still in flight: late results are ignored.
            for task in in_flight.values():
                task.cancel()
            if inbox_get is not None:
                inbox_get.cancel()
        await self._write(batch, save, traceparent)
        if batch.state.status in TERMINAL:
            self._tools.release(batch.state.task_id)
        return batch.state

    def _start_command(self, state: TaskState) -> StartTask:
        limits = self._limits
        return StartTask(
            provider=self._gateway.provider,
            model=self._gateway.model,
            offline=self._gateway.offline,
            max_steps=limits.max_steps,
            tools=self._tools.names(),
            now=self._clock(),
            max_attempts=limits.max_attempts,
            max_parallel=limits.max_parallel,
            token_budget=limits.task_token_budget,
            org_budget_usd=limits.org_budget_for(state.org_id),
        )

    async def _step_local(
        self,
        batch: _Batch,
        in_flight: dict[str, asyncio.Task[Command]],
        traceparent: str | None,
        save: Callable[[TaskState], None],
    ) -> bool:
        """Perform one local effect (True), or start every new external one (False)."""
        for effect in pending_effects(batch.state):
            key = _effect_key(effect)
            if key in in_flight:
                continue
            if isinstance(effect, AuthorizeTool):
                self._decide(self._policy.authorize(effect, batch.state), batch)
                return True
            if isinstance(effect, ReserveBudget):
                if self._ledger is None:
                    raise RuntimeError("the task has an org budget but the runner has no budget ledger")
                self._decide(await self._ledger.reserve(effect, batch.state, self._clock()), batch)
                return True
            if (
                isinstance(effect, RunTool)
                and effect.not_before is None
                and self._tools.is_local(effect.request.tool)
            ):
                self._decide(await self._run_tool(effect, batch.state), batch)
                return True
            # An external effect: its request must be durable before it starts.
            await self._write(batch, save, traceparent)
            in_flight[key] = asyncio.create_task(self._perform(effect, batch.state))
        return False

    async def _perform(self, effect: Effect, state: TaskState) -> Command:
        not_before = getattr(effect, "not_before", None)
        if not_before is not None:
            delay = (not_before - self._clock()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
        if isinstance(effect, CallModel):
            stream_to = state.task_id if self._stream_tokens else None
            with tracing.span(
                "llm call",
                kind=tracing.SpanKind.CLIENT,
                attributes={
                    "agentlog.task_id": state.task_id,
                    "agentlog.idempotency_key": effect.request.idempotency_key,
                    "gen_ai.request.model": self._gateway.model,
                },
            ):
                answer = await self._gateway.complete(
                    effect.request, effect.messages_json, stream_task_id=stream_to
                )
            # The answer is to this attempt of the request; the gateway's own retries are inside it.
            result = answer.model_copy(update={"attempt": effect.request.attempt})
            if self._ledger is not None and state.org_budget_usd is not None:
                cost = result.cost_usd if isinstance(result, RecordModelResponse) else 0.0
                await self._ledger.settle(effect.request, state, cost, self._clock())
            if (
                isinstance(result, RecordModelFailure)
                and result.retry_at is None
                and is_transient(result.error_type)
            ):
                attempt = effect.request.attempt
                return result.model_copy(
                    update={
                        "retryable": True,
                        "retry_at": retry_at(self._clock(), attempt, self._rng.random()),
                    }
                )
            return result
        if isinstance(effect, RunTool):
            return await self._run_tool(effect, state)
        raise TypeError(f"{type(effect).__name__} is not an external effect")

    async def _run_tool(self, effect: RunTool, state: TaskState) -> RecordToolResult:
        result = (await self._tools.run(effect.request, state)).model_copy(update={"attempt": effect.attempt})
        if result.retryable and result.retry_at is None:
            when = retry_at(self._clock(), effect.attempt, self._rng.random())
            return result.model_copy(update={"retry_at": when})
        return result

    def _decide(self, command: Command, batch: _Batch) -> None:
        payloads = decide(command, batch.state)
        if not payloads:
            return
        stamped = stamp(
            batch.state, payloads, now=self._clock(), producer=PRODUCER, producer_version=PRODUCER_VERSION
        )
        for event, _ in stamped:
            batch.state = evolve(batch.state, event)
        batch.events.extend(stamped)

    async def _write(self, batch: _Batch, save: Callable[[TaskState], None], traceparent: str | None) -> None:
        """One acknowledged write of the batch's events and the state they lead to."""
        if not batch.events:
            return
        state = batch.state
        saved = None
        if self._state_topic is not None:
            event, body = checkpoint(
                state, now=self._clock(), producer=PRODUCER, producer_version=PRODUCER_VERSION
            )
            saved = (self._state_topic, event, body)
        # A span per decision: its events carry its traceparent, so their projections join it.
        with tracing.span(
            "task decision",
            traceparent,
            kind=tracing.SpanKind.PRODUCER,
            attributes={"agentlog.task_id": state.task_id, "agentlog.events": len(batch.events)},
        ) as decision:
            await self._producer.publish(self._topic, batch.events, traceparent=decision, checkpoint=saved)
        observe_written((event for event, _ in batch.events), state.mode.value.lower())
        batch.events = []
        save(state)


class _Batch:
    """Events decided but not yet written, and the state after them."""

    def __init__(self, state: TaskState) -> None:
        self.state = state
        self.events: list[tuple[Event, bytes]] = []
