"""Pydantic models of agentlog's events, one per Avro record in ``schemas/avro``.

An :class:`Event` is an :class:`Envelope` (identity, ordering, hash chain) plus a payload (the fact
itself). Deciders produce payloads; the envelope is added when the payload is sealed into the task's
history. ``tests/unit/schemas/test_events_match_avsc.py`` keeps these models and the ``.avsc`` files
in step, field by field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

NAMESPACE = "agentlog.events"


class Priority(StrEnum):
    HIGH = "HIGH"
    NORMAL = "NORMAL"
    LOW = "LOW"


class Envelope(BaseModel):
    """Common header of every task event."""

    model_config = ConfigDict(frozen=True)

    event_id: UUID
    task_id: str
    org_id: str
    user_id: str
    sequence: int = Field(ge=0)
    occurred_at: datetime
    causation_id: str | None = None
    correlation_id: str
    producer: str
    producer_version: str
    prev_hash: str | None = None

    @field_validator("occurred_at")
    @classmethod
    def _millisecond_utc(cls, value: datetime) -> datetime:
        # Avro timestamp-millis keeps milliseconds; truncating here makes encode/decode exact.
        if value.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware (UTC)")
        return value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)


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


class TaskSubmitted(Payload):
    record_name: ClassVar[str] = "TaskSubmitted"
    query: str
    context: dict[str, str] = Field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    session_id: str | None = None
    idempotency_key: str | None = None


class TaskAccepted(Payload):
    record_name: ClassVar[str] = "TaskAccepted"
    execution_mode: str
    max_steps: int
    provider: str
    model: str
    offline: bool


class LlmCallRequested(Payload):
    record_name: ClassVar[str] = "LlmCallRequested"
    step: int
    idempotency_key: str
    provider: str
    model: str
    messages_json: str
    tools: list[str] = Field(default_factory=list)


class LlmCallCompleted(Payload):
    record_name: ClassVar[str] = "LlmCallCompleted"
    step: int
    idempotency_key: str
    provider: str
    model: str
    content: str | None = None
    tool_calls_json: str = "[]"
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    latency_ms: float
    offline: bool
    response_json: str


class LlmCallFailed(Payload):
    record_name: ClassVar[str] = "LlmCallFailed"
    step: int
    idempotency_key: str
    provider: str
    model: str
    error_type: str
    error: str
    latency_ms: float


class ToolCallRequested(Payload):
    record_name: ClassVar[str] = "ToolCallRequested"
    step: int
    idempotency_key: str
    tool_call_id: str
    tool: str
    arguments_json: str


class ToolCallCompleted(Payload):
    record_name: ClassVar[str] = "ToolCallCompleted"
    step: int
    idempotency_key: str
    tool_call_id: str
    tool: str
    output: str
    latency_ms: float


class ToolCallFailed(Payload):
    record_name: ClassVar[str] = "ToolCallFailed"
    step: int
    idempotency_key: str
    tool_call_id: str
    tool: str
    error_type: str
    error: str
    latency_ms: float


class TaskCompleted(Payload):
    record_name: ClassVar[str] = "TaskCompleted"
    result: str
    steps: int
    llm_calls: int
    tool_calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TaskFailed(Payload):
    record_name: ClassVar[str] = "TaskFailed"
    reason: str
    error: str
    steps: int
    llm_calls: int
    tool_calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


PAYLOAD_TYPES: dict[str, type[Payload]] = {
    cls.fullname(): cls
    for cls in (
        TaskSubmitted,
        TaskAccepted,
        LlmCallRequested,
        LlmCallCompleted,
        LlmCallFailed,
        ToolCallRequested,
        ToolCallCompleted,
        ToolCallFailed,
        TaskCompleted,
        TaskFailed,
    )
}
TERMINAL_TYPES: frozenset[str] = frozenset({"TaskCompleted", "TaskFailed"})


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
    source_partition: int
    source_offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    error_type: str
    error: str
    consumer: str

    @classmethod
    def fullname(cls) -> str:
        return f"{NAMESPACE}.{cls.record_name}"
