"""Requests to a running task: commands from outside that share the requests topic with submissions.

A request is not a fact of the task's history: it has no place in the per-task sequence or hash
chain (only the processor, the task's single writer, appends to those). The processor decides what
a request leads to (``TaskCancelled``, ``ApprovalGranted`` / ``ApprovalRejected``, or nothing for a
late or duplicate one) and records that. Keyed by task id, a request lands on the task's partition
after its submission, so the worker that runs the task receives it.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.events import millisecond_utc

REQUESTS_NAMESPACE = "agentlog.requests"


class RequestHeader(BaseModel):
    model_config = ConfigDict(frozen=True)

    request_id: UUID
    task_id: str = Field(min_length=1)
    org_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    issued_at: datetime
    producer: str
    producer_version: str

    _millis = field_validator("issued_at")(millisecond_utc)


class TaskRequest(BaseModel):
    """Base of the request records; ``record_name`` is the Avro record's name."""

    model_config = ConfigDict(frozen=True)
    record_name: ClassVar[str]

    header: RequestHeader

    @classmethod
    def fullname(cls) -> str:
        return f"{REQUESTS_NAMESPACE}.{cls.record_name}"

    @property
    def task_id(self) -> str:
        return self.header.task_id


class CancellationRequested(TaskRequest):
    record_name: ClassVar[str] = "CancellationRequested"
    reason: str


class ApprovalDecided(TaskRequest):
    record_name: ClassVar[str] = "ApprovalDecided"
    approval_id: str = Field(min_length=1)
    approved: bool
    reason: str


class TaskForkRequested(TaskRequest):
    """Start a new task (``header.task_id``) from the first ``prefix_events`` events of another."""

    record_name: ClassVar[str] = "TaskForkRequested"
    source_task_id: str = Field(min_length=1)
    prefix_events: int = Field(ge=0, le=2**63 - 1)  # at least 1 to be valid: checked on forking
    model: str | None = None
    input: str | None = None
    overrides: dict[str, str] = Field(default_factory=dict)


REQUEST_TYPES: dict[str, type[TaskRequest]] = {
    cls.fullname(): cls for cls in (CancellationRequested, ApprovalDecided, TaskForkRequested)
}
