"""The state the task decider folds from a task's history: the task and each of its agents.

A task has one ``main`` agent (it plans, delegates and merges, or in simple mode does all the work)
and, in standard and complex mode, one sub-agent per subtask of its plan (``agent_id`` = the
subtask id). Each agent runs its own THINK -> ACT -> RESPOND loop with its own conversation and step
count; the task's totals add them up. Everything is frozen and JSON-serialisable: it is what the
processor checkpoints.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from schemas.events import (
    MAIN_AGENT,
    ExecutionMode,
    LlmCallRequested,
    ModelTier,
    Priority,
    Subtask,
    ToolCallRequested,
)


class Status(StrEnum):
    NEW = "new"
    SUBMITTED = "submitted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.REJECTED})


class AgentStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Purpose(StrEnum):
    """What the main agent's pending LLM call is for (sub-agents always ``answer``)."""

    ANSWER = "answer"
    PLAN = "plan"
    MERGE = "merge"


class HistoryError(ValueError):
    """An event does not fit the task's history (gap in sequence, broken hash link, wrong task)."""


class ToolCallState(BaseModel):
    """A requested tool call that has not finished: where it stands between policy and result."""

    model_config = ConfigDict(frozen=True)

    request: ToolCallRequested
    authorized: bool = False
    approval_id: str | None = None  # set while a human decision is awaited
    attempt: int = 1
    retry_at: datetime | None = None


class AgentState(BaseModel):
    """One agent's loop: conversation (each message as compact JSON text), step, pending effects."""

    model_config = ConfigDict(frozen=True)

    agent_id: str = MAIN_AGENT
    role: str = "assistant"
    status: AgentStatus = AgentStatus.RUNNING
    step: int = 0
    messages: tuple[str, ...] = ()
    purpose: Purpose = Purpose.ANSWER
    pending_llm: LlmCallRequested | None = None
    retry_at: datetime | None = None
    tools: tuple[ToolCallState, ...] = ()
    result: str | None = None

    @property
    def busy(self) -> bool:
        return self.pending_llm is not None or bool(self.tools)


class TaskState(BaseModel):
    """Everything the decider knows about one task; JSON-serialisable for the processor's checkpoint."""

    model_config = ConfigDict(frozen=True)

    task_id: str = ""
    status: Status = Status.NEW
    org_id: str = ""
    user_id: str = ""
    user_role: str | None = None
    correlation_id: str = ""
    query: str = ""
    priority: Priority = Priority.NORMAL
    not_before: datetime | None = None
    sequence: int = -1
    last_event_id: str | None = None
    last_digest: str | None = None
    max_steps: int = 0
    max_attempts: int = 1
    provider: str = ""
    model: str = ""
    # A fork's --model: every later call goes to this model whatever its tier (None: by tier).
    pinned_model: str | None = None
    tier: ModelTier = ModelTier.MEDIUM
    offline: bool = False
    tools: tuple[str, ...] = ()
    mode: ExecutionMode = ExecutionMode.SIMPLE
    complexity: float = 0.0
    plan: tuple[Subtask, ...] = ()
    max_parallel: int = 1
    agents: dict[str, AgentState] = {}
    token_budget: int | None = None
    org_budget_usd: float | None = None
    reserved: tuple[str, ...] = ()  # idempotency keys whose org budget reservation is recorded
    llm_calls: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    result: str | None = None
    error: str | None = None
    failure_reason: str | None = None  # TaskFailed.reason / TaskRejected.reason
    forked_from: str | None = None  # TaskForked: the source task and how many of its events were copied
    forked_at: int | None = None
    fork_overrides: dict[str, str] = {}  # TaskForked.overrides: a fork before TaskAccepted starts with them

    @property
    def main(self) -> AgentState:
        return self.agents.get(MAIN_AGENT) or AgentState()

    @property
    def steps(self) -> int:
        return sum(agent.step for agent in self.agents.values())

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def waiting_for_approval(self) -> list[str]:
        """Approval ids the task waits for (a human decision, not an effect the shell performs)."""
        return [
            call.approval_id
            for agent in self.agents.values()
            for call in agent.tools
            if call.approval_id is not None
        ]


def conversation_json(agent: AgentState) -> str:
    """The agent's conversation as a JSON array: the prompt of its next (or pending) LLM call."""
    return f"[{','.join(agent.messages)}]"
