"""The task shell: feeds the decider commands, performs the effects it asks for, records everything.

Each decision's events, together with the state they lead to (the task-state topic), go out in one
batch and are acknowledged before the state advances and before any effect they request is
performed, so a crash never loses a request and never hides a result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from processors.llm.gateway import LlmGateway
from processors.task.decider import (
    Command,
    Effect,
    RecordToolResult,
    StartTask,
    Status,
    TaskState,
    conversation_json,
    decide,
    evolve,
    pending_effects,
)
from processors.task.history import checkpoint, stamp
from processors.tools.registry import TOOLS, get_tool, parse_arguments
from schemas.events import Event, LlmCallRequested, ToolCallRequested
from streams.producer import EventProducer

log = logging.getLogger(__name__)

PRODUCER = "agentlog-processor"
PRODUCER_VERSION = "0.1.0"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class TaskRunner:
    """Runs one task from its current state to the end of its agent loop."""

    def __init__(
        self,
        *,
        producer: EventProducer,
        events_topic: str,
        gateway: LlmGateway,
        max_steps: int,
        state_topic: str | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._producer = producer
        self._topic = events_topic
        self._state_topic = state_topic
        self._gateway = gateway
        self._max_steps = max_steps
        self._clock = clock

    async def run(
        self, state: TaskState, save: Callable[[TaskState], None], *, traceparent: str | None = None
    ) -> TaskState:
        """Advance ``state`` until no effect is pending; ``save`` is called after every write.

        Decisions accumulate in one batch that is written (and acknowledged) before any effect
        with consequences outside this process (an LLM call, an impure tool) is performed, and
        at the end. Pure local tools run at once and their request and result join the batch, so
        a model+tool step costs one acknowledged write, not two.
        """
        batch = _Batch(state)
        if state.status is Status.SUBMITTED:
            start = StartTask(
                provider=self._gateway.provider,
                model=self._gateway.model,
                offline=self._gateway.offline,
                max_steps=self._max_steps,
                tools=tuple(TOOLS),
            )
            self._decide(start, batch)
        while effects := pending_effects(batch.state):
            for effect in effects:
                if isinstance(effect, ToolCallRequested) and _is_pure(effect.tool):
                    self._decide(run_tool(effect), batch)
                else:
                    await self._write(batch, save, traceparent)
                    self._decide(await self._perform(effect, batch.state), batch)
        await self._write(batch, save, traceparent)
        return batch.state

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
        await self._producer.publish(self._topic, batch.events, traceparent=traceparent, checkpoint=saved)
        batch.events = []
        save(state)

    async def _perform(self, effect: Effect, state: TaskState) -> Command:
        if isinstance(effect, LlmCallRequested):
            return await self._gateway.complete(effect, conversation_json(state))
        return run_tool(effect)


class _Batch:
    """Events decided but not yet written, and the state after them."""

    def __init__(self, state: TaskState) -> None:
        self.state = state
        self.events: list[tuple[Event, bytes]] = []


def _is_pure(tool: str) -> bool:
    return tool in TOOLS and TOOLS[tool].pure


def run_tool(request: ToolCallRequested) -> RecordToolResult:
    """Run a tool call; a tool's own error is recorded as a result for the model to see."""
    started = time.perf_counter()
    try:
        output = get_tool(request.tool).run(parse_arguments(request.arguments_json))
    except (LookupError, ValueError, TypeError, ArithmeticError) as exc:
        return RecordToolResult(
            idempotency_key=request.idempotency_key,
            error_type=type(exc).__name__,
            error=str(exc),
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    return RecordToolResult(
        idempotency_key=request.idempotency_key,
        output=output,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
