"""The topic catalogue: every Kafka topic agentlog owns, its key, retention and the events it carries.

Task topics are keyed by task id so that all of a task's events land on one partition, in order.
Both task topics keep their records forever: the log is the system of record that projections are
rebuilt from and that the audit tooling replays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.events import PAYLOAD_TYPES, AuditSealed, CheckpointSaved, RecordDeadLettered, TaskSubmitted
from schemas.requests import REQUEST_TYPES
from streams.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    """One topic: name (without prefix), partitioning, key and retention, and what it carries."""

    suffix: str
    description: str
    key: str
    event_types: tuple[str, ...]
    partitions: int | None = None  # None: the task-topic partition count from settings
    config: dict[str, str] = field(default_factory=dict)

    def name(self, settings: Settings) -> str:
        return f"{settings.topic_prefix}.{self.suffix}"

    def partition_count(self, settings: Settings) -> int:
        return self.partitions or settings.topic_partitions


_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}

REQUESTS = TopicSpec(
    suffix="tasks.requests",
    description=(
        "Task submissions, and requests to running tasks (cancellation, approval decisions), from the "
        "REST API, the CLI and other systems."
    ),
    key="task id",
    event_types=(TaskSubmitted.fullname(), *REQUEST_TYPES),
    config=_FOREVER,
)
EVENTS = TopicSpec(
    suffix="tasks.events",
    description="Every fact of a task after its submission: decisions, LLM and tool calls, outcome.",
    key="task id",
    event_types=tuple(
        name for name in PAYLOAD_TYPES if name not in (TaskSubmitted.fullname(), CheckpointSaved.fullname())
    ),
    config=_FOREVER,
)
DEAD_LETTER = TopicSpec(
    suffix="deadletter",
    description="Records that could not be decoded or processed, with their bytes and source position.",
    key="source topic/partition/offset",
    event_types=(RecordDeadLettered.fullname(),),
    config=_FOREVER,
)
TASK_STATE = TopicSpec(
    suffix="tasks.state",
    description=(
        "The processor's latest state of each task (CheckpointSaved), written in the same acknowledged "
        "batch as the decision's events; compacted. Workers load it on start to dedupe and resume tasks."
    ),
    key="task id",
    event_types=(CheckpointSaved.fullname(),),
    config={"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"},
)
AUDIT = TopicSpec(
    suffix="audit",
    description=(
        "AuditSealed: the Merkle root of each org's task events of each UTC day, written by the "
        "auditor component (or `agentlog seal`); `agentlog verify --all` recomputes every sealed root."
    ),
    key="org id/day",
    event_types=(AuditSealed.fullname(),),
    partitions=1,
    config=_FOREVER,
)
SCHEMAS = TopicSpec(
    suffix="schemas",
    description="Storage of the schema registry (compacted; one partition keeps ids in order).",
    key="subject and version",
    event_types=(),
    partitions=1,
    config={"cleanup.policy": "compact"},
)

CATALOGUE: tuple[TopicSpec, ...] = (REQUESTS, EVENTS, TASK_STATE, DEAD_LETTER, AUDIT, SCHEMAS)
TASK_TOPICS: tuple[TopicSpec, ...] = (REQUESTS, EVENTS)
