"""The processor's task states: in memory while it runs, durable on the compacted task-state topic.

Every decision's state is written to the task-state topic in the same acknowledged batch as its
events (see :class:`processors.task.runner.TaskRunner`), so the topic is never behind the events a
worker acted on. A worker loads the topic on start: a redelivered submission of a finished task is
then ignored, and one of an unfinished task resumes from its last recorded state (its pending
effect is performed again under the same idempotency key).

This replaces a faust table: faust's buffered changelog producer could not keep up with a write per
decision (``producer buffer full`` stalls, measured in docs/benchmarks.md), while one batched write
with the events costs one extra record.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.task.decider import TERMINAL, Status, TaskState
from schemas.codec import EventCodec
from schemas.events import CheckpointSaved

log = logging.getLogger(__name__)


class TaskStates:
    """Latest known state per task: unfinished tasks in full, finished ones by status only."""

    def __init__(self) -> None:
        self._live: dict[str, TaskState] = {}
        self._finished: dict[str, Status] = {}
        # Unfinished tasks loaded from checkpoints, with when each was saved: a worker that died
        # may have written events after its last checkpoint (or, across partitions, the checkpoint
        # without all of its events), so these are reconciled with the log before they run.
        self.restored: dict[str, datetime] = {}

    def get(self, task_id: str) -> TaskState | None:
        if (status := self._finished.get(task_id)) is not None:
            return TaskState(task_id=task_id, status=status)
        return self._live.get(task_id)

    def put(self, state: TaskState) -> None:
        if state.status in TERMINAL:
            self._live.pop(state.task_id, None)
            self._finished[state.task_id] = state.status
        else:
            self._live[state.task_id] = state

    def unfinished(self) -> list[TaskState]:
        return list(self._live.values())

    def __len__(self) -> int:
        return len(self._live) + len(self._finished)

    async def load(
        self, bootstrap: str, topic: str, partitions: int | Collection[int], codec: EventCodec
    ) -> int:
        """Read the task-state topic (to its end at call time): all ``partitions`` of it, or the
        partitions numbered in it; returns records read. Later records win, so loading a partition
        again brings its tasks up to date with what another worker did with them meanwhile.

        A record that does not decode to a ``CheckpointSaved`` raises: starting without a task's
        state would run the task again from its submission, redoing recorded effects.
        """
        numbers = range(partitions) if isinstance(partitions, int) else sorted(partitions)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        read = 0
        try:
            assigned = [TopicPartition(topic, p) for p in numbers]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends = await consumer.end_offsets(assigned)
            remaining = {tp for tp in assigned if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
                for tp, records in batch.items():
                    for record in records:
                        if record.value is not None:
                            position = f"{tp.topic}[{tp.partition}]@{record.offset}"
                            state, saved_at = await _state_of(codec, record.value, position)
                            self.put(state)
                            if state.status in TERMINAL:
                                self.restored.pop(state.task_id, None)
                            else:
                                self.restored[state.task_id] = saved_at
                            read += 1
                    if records and records[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        log.info(
            "loaded %d task states from %s %s (%d unfinished in all)",
            read,
            topic,
            list(numbers),
            len(self._live),
        )
        return read


class CheckpointError(ValueError):
    """A task-state record is not a decodable ``CheckpointSaved``."""


async def _state_of(codec: EventCodec, value: bytes, position: str) -> tuple[TaskState, datetime]:
    event = await codec.decode(value)
    if not isinstance(event.payload, CheckpointSaved):
        raise CheckpointError(f"{position}: expected CheckpointSaved, found {event.event_type}")
    return TaskState.model_validate_json(event.payload.state_json), event.envelope.occurred_at
