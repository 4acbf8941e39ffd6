"""Pydantic models of agentlog's events, one per Avro record in ``schemas/avro``.

An :class:`Event` is an :class:`Envelope` (identity, ordering, hash chain) plus a payload (the fact
itself). Deciders produce payloads; the envelope is added when the payload is sealed into the task's
history. ``tests/unit/schemas/test_events_match_avsc.py`` keeps these models and the ``.avsc`` files
in step, field by field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

NAMESPACE = "agentlog.events"

# Avro's integer types are 32 and 64 bits: a model accepts only what its record can hold, so an
# out-of-range value is a validation error naming the field, not an encoder crash.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


def millisecond_utc(value: datetime | None) -> datetime | None:
    """Avro timestamp-millis keeps milliseconds in UTC; normalising here makes encode/decode exact."""
    if value is None or (value.tzinfo is UTC and not value.microsecond % 1000):
        return value  # already UTC milliseconds: every decoded timestamp takes this path
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError as exc:
        # 0001-01-01T00:00+01:00 is a year-0 instant: pydantic reports only ValueErrors as the field's.
        raise ValueError(f"{value.isoformat()} is out of range once converted to UTC") from exc
    return in_utc.replace(microsecond=value.microsecond // 1000 * 1000)


class Priority(StrEnum):
    HIGH = "HIGH"
    NORMAL = "NORMAL"
    LOW = "LOW"


class ExecutionMode(StrEnum):
    SIMPLE = "SIMPLE"
    STANDARD = "STANDARD"
    COMPLEX = "COMPLEX"


class ModelTier(StrEnum):
    SMALL = "SMALL"
    MEDIUM = "MEDIUM"
    LARGE = "LARGE"


class StepKind(StrEnum):
    THINK = "THINK"
    ACT = "ACT"
    DELEGATE = "DELEGATE"
    RESPOND = "RESPOND"


class BudgetScope(StrEnum):
    TASK = "TASK"
    ORG_DAY = "ORG_DAY"


class CacheKind(StrEnum):
    EXACT = "EXACT"
    SEMANTIC = "SEMANTIC"


class Envelope(BaseModel):
    """Common header of every task event."""

    model_config = ConfigDict(frozen=True)

    event_id: UUID
    task_id: str
    org_id: str
    user_id: str
    sequence: Annotated[int, Field(ge=0, le=2**63 - 1)]
    occurred_at: datetime
    causation_id: str | None = None
    correlation_id: str
    producer: str
    producer_version: str
    prev_hash: str | None = None

    _millis = field_validator("occurred_at")(millisecond_utc)


class Payload(BaseModel):
    """Base of every event payload; ``record_name`` is the Avro record's name."""

    model_config = ConfigDict(frozen=True)
    record_name: ClassVar[str]

    @classmethod
    def fullname(cls) -> str:
        return f"{NAMESPACE}.{cls.record_name}"

    @property
    def event_type(self) -> str:
        return self.record_name


MAIN_AGENT = "main"


class Subtask(BaseModel):
    """One node of a plan (nested record of :class:`PlanDecided`)."""

    model_config = ConfigDict(frozen=True)

    subtask_id: str
    description: str
    agent: str
    depends_on: list[str] = Field(default_factory=list)
    tier: ModelTier = ModelTier.MEDIUM


class _Totals(Payload):
    """Usage totals carried by the events that end a task."""

    steps: Int32
    llm_calls: Int32
    tool_calls: Int32
    prompt_tokens: Int64
    completion_tokens: Int64
    total_tokens: Int64
    cost_usd: float = 0.0


class TaskSubmitted(Payload):
    record_name: ClassVar[str] = "TaskSubmitted"
    query: str
    context: dict[str, str] = Field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    session_id: str | None = None
    idempotency_key: str | None = None
    not_before: datetime | None = None
    token_budget: Int64 | None = None
    user_role: str | None = None

    _millis = field_validator("not_before")(millisecond_utc)


class TaskAccepted(Payload):
    record_name: ClassVar[str] = "TaskAccepted"
    execution_mode: ExecutionMode
    complexity: float = 0.0
    max_steps: Int32
    provider: str
    model: str
    tier: ModelTier = ModelTier.MEDIUM
    offline: bool
    tools: list[str] = Field(default_factory=list)
    max_attempts: Int32 = 1
    max_parallel: Int32 = 1
    token_budget: Int64 | None = None
    org_budget_usd: float | None = None


class TaskRejected(Payload):
    record_name: ClassVar[str] = "TaskRejected"
    reason: str
    error: str


class TaskCancelled(_Totals):
    record_name: ClassVar[str] = "TaskCancelled"
    reason: str
    cancelled_by: str
    abandoned: list[str] = Field(default_factory=list)


class TaskCompleted(_Totals):
    record_name: ClassVar[str] = "TaskCompleted"
    result: str


class TaskFailed(_Totals):
    record_name: ClassVar[str] = "TaskFailed"
    reason: str
    error: str


class TaskForked(Payload):
    """The task is a fork: its earlier events copy the source's first ``prefix_events``."""

    record_name: ClassVar[str] = "TaskForked"
    source_task_id: str
    prefix_events: Int64
    source_last_event_id: str | None = None
    forked_by: str
    model: str | None = None
    input: str | None = None
    overrides: dict[str, str] = Field(default_factory=dict)
    reissued: list[str] = Field(default_factory=list)


class PlanDecided(Payload):
    record_name: ClassVar[str] = "PlanDecided"
    execution_mode: ExecutionMode
    subtasks: list[Subtask]
    max_parallel: Int32
    planner_idempotency_key: str | None = None
    rationale: str | None = None


class SubtaskStarted(Payload):
    record_name: ClassVar[str] = "SubtaskStarted"
    subtask_id: str
    agent_id: str


class SubtaskCompleted(Payload):
    record_name: ClassVar[str] = "SubtaskCompleted"
    subtask_id: str
    agent_id: str
    result: str


class SubtaskFailed(Payload):
    record_name: ClassVar[str] = "SubtaskFailed"
    subtask_id: str
    agent_id: str
    error: str


class AgentStepStarted(Payload):
    record_name: ClassVar[str] = "AgentStepStarted"
    agent_id: str = MAIN_AGENT
    step: Int32
    kind: StepKind


class AgentStepFinished(Payload):
    record_name: ClassVar[str] = "AgentStepFinished"
    agent_id: str = MAIN_AGENT
    step: Int32
    kind: StepKind
    outcome: str


class LlmCallRequested(Payload):
    record_name: ClassVar[str] = "LlmCallRequested"
    step: Int32
    agent_id: str = MAIN_AGENT
    idempotency_key: str
    provider: str
    model: str
    tier: ModelTier = ModelTier.MEDIUM
    messages_json: str
    prompt_messages: Int32 = 0
    prompt_sha256: str | None = None
    tools: list[str] = Field(default_factory=list)
    response_format_json: str | None = None
    attempt: Int32 = 1
    pinned_model: str | None = None


class LlmCallCompleted(Payload):
    record_name: ClassVar[str] = "LlmCallCompleted"
    step: Int32
    agent_id: str = MAIN_AGENT
    idempotency_key: str
    provider: str
    model: str
    tier: ModelTier = ModelTier.MEDIUM
    content: str | None = None
    tool_calls_json: str = "[]"
    finish_reason: str
    prompt_tokens: Int64
    completion_tokens: Int64
    total_tokens: Int64
    cost_usd: float = 0.0
    latency_ms: float
    cache_hit: bool = False
    cache_kind: CacheKind | None = None
    attempt: Int32 = 1
    offline: bool
    response_json: str


class LlmCallFailed(Payload):
    record_name: ClassVar[str] = "LlmCallFailed"
    step: Int32
    agent_id: str = MAIN_AGENT
    idempotency_key: str
    provider: str
    model: str
    tier: ModelTier = ModelTier.MEDIUM
    error_type: str
    error: str
    latency_ms: float
    attempt: Int32 = 1
    retryable: bool = False
    next_attempt_at: datetime | None = None

    _millis = field_validator("next_attempt_at")(millisecond_utc)


class _ToolCallFact(Payload):
    """Fields every tool-call event carries: which call of which agent step."""

    step: Int32
    agent_id: str = MAIN_AGENT
    idempotency_key: str
    tool_call_id: str
    tool: str


class ToolCallRequested(_ToolCallFact):
    record_name: ClassVar[str] = "ToolCallRequested"
    arguments_json: str


class ToolCallAuthorized(_ToolCallFact):
    record_name: ClassVar[str] = "ToolCallAuthorized"
    rule: str
    approval_id: str | None = None


class ToolCallDenied(_ToolCallFact):
    record_name: ClassVar[str] = "ToolCallDenied"
    rule: str
    reason: str
    approval_id: str | None = None


class ToolCallCompleted(_ToolCallFact):
    record_name: ClassVar[str] = "ToolCallCompleted"
    output: str
    latency_ms: float
    truncated: bool = False
    quarantined: bool = False
    findings: list[str] = Field(default_factory=list)


class ToolCallFailed(_ToolCallFact):
    record_name: ClassVar[str] = "ToolCallFailed"
    error_type: str
    error: str
    latency_ms: float
    attempt: Int32 = 1
    retryable: bool = False
    next_attempt_at: datetime | None = None

    _millis = field_validator("next_attempt_at")(millisecond_utc)


class ApprovalRequested(Payload):
    record_name: ClassVar[str] = "ApprovalRequested"
    approval_id: str
    step: Int32
    agent_id: str = MAIN_AGENT
    idempotency_key: str
    tool_call_id: str
    tool: str
    arguments_json: str
    rule: str
    reason: str


class ApprovalGranted(Payload):
    record_name: ClassVar[str] = "ApprovalGranted"
    approval_id: str
    decided_by: str
    reason: str


class ApprovalRejected(Payload):
    record_name: ClassVar[str] = "ApprovalRejected"
    approval_id: str
    decided_by: str
    reason: str


class _BudgetFact(Payload):
    """Fields every budget event carries: the scope and where its spend stood."""

    scope: BudgetScope
    scope_id: str
    used_tokens: Int64
    used_usd: float
    limit_tokens: Int64 | None = None
    limit_usd: float | None = None


class BudgetReserved(_BudgetFact):
    record_name: ClassVar[str] = "BudgetReserved"
    idempotency_key: str
    tokens: Int64
    cost_usd: float


class BudgetThresholdReached(_BudgetFact):
    record_name: ClassVar[str] = "BudgetThresholdReached"
    threshold: float


class BudgetExceeded(_BudgetFact):
    record_name: ClassVar[str] = "BudgetExceeded"
    idempotency_key: str
    requested_tokens: Int64
    requested_usd: float
    action: str


class CheckpointSaved(Payload):
    record_name: ClassVar[str] = "CheckpointSaved"
    step: Int32
    status: str
    state_json: str


PAYLOAD_TYPES: dict[str, type[Payload]] = {
    cls.fullname(): cls
    for cls in (
        TaskSubmitted,
        TaskAccepted,
        TaskRejected,
        TaskCancelled,
        TaskCompleted,
        TaskFailed,
        TaskForked,
        PlanDecided,
        SubtaskStarted,
        SubtaskCompleted,
        SubtaskFailed,
        AgentStepStarted,
        AgentStepFinished,
        LlmCallRequested,
        LlmCallCompleted,
        LlmCallFailed,
        ToolCallRequested,
        ToolCallAuthorized,
        ToolCallDenied,
        ToolCallCompleted,
        ToolCallFailed,
        ApprovalRequested,
        ApprovalGranted,
        ApprovalRejected,
        BudgetReserved,
        BudgetThresholdReached,
        BudgetExceeded,
        CheckpointSaved,
    )
}
TERMINAL_TYPES: frozenset[str] = frozenset({"TaskCompleted", "TaskFailed", "TaskCancelled", "TaskRejected"})


class Event(BaseModel):
    """One fact in a task's history: envelope + payload, and the SHA-256 of its Avro body.

    ``digest`` is not part of the Avro record: it is computed from the bytes as written, so the hash
    chain is checked against exactly what is on the log.
    """

    model_config = ConfigDict(frozen=True)

    envelope: Envelope
    payload: SerializeAsAny[Payload]
    digest: str

    @property
    def event_type(self) -> str:
        return self.payload.record_name

    @property
    def task_id(self) -> str:
        return self.envelope.task_id

    @property
    def sequence(self) -> int:
        return self.envelope.sequence


class RecordDeadLettered(BaseModel):
    """A record that could not be decoded or processed (not part of any task's history)."""

    model_config = ConfigDict(frozen=True)
    record_name: ClassVar[str] = "RecordDeadLettered"

    dead_letter_id: UUID
    occurred_at: datetime
    source_topic: str
    source_partition: Int32
    source_offset: Int64
    key: bytes | None = None
    value: bytes | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    error_type: str
    error: str
    consumer: str

    @classmethod
    def fullname(cls) -> str:
        return f"{NAMESPACE}.{cls.record_name}"


class AuditSealed(BaseModel):
    """The Merkle root of one org's events of one UTC day (not part of any task's history)."""

    model_config = ConfigDict(frozen=True)
    record_name: ClassVar[str] = "AuditSealed"

    seal_id: UUID
    org_id: str
    day: str
    events: Int64
    tasks: Int64
    root: str
    algorithm: str
    leaf_order: str
    sealed_at: datetime
    sealed_by: str

    _millis = field_validator("sealed_at")(millisecond_utc)

    @classmethod
    def fullname(cls) -> str:
        return f"{NAMESPACE}.{cls.record_name}"
