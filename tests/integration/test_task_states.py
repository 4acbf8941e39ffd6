"""The processor's task-state topic: what it holds equals a fold of the log, and it dedupes redelivery."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from processors.task.decider import Status, TaskState, fold
from processors.task.states import TaskStates
from schemas.codec import EventCodec
from schemas.registry.client import RegistryClient
from streams.settings import Settings
from streams.topics import TASK_STATE
from tests.integration.conftest import QUERY, api, pg_rows, task_history


def _load(settings: Settings, states: TaskStates) -> int:
    async def load() -> int:
        registry = RegistryClient(settings.schema_registry_url)
        try:
            return await states.load(
                settings.kafka_bootstrap,
                TASK_STATE.name(settings),
                TASK_STATE.partition_count(settings),
                EventCodec(registry),
            )
        finally:
            await registry.close()

    return asyncio.run(load())


def test_state_topic_holds_the_fold_of_the_log(platform: Settings, completed_task: dict[str, Any]) -> None:
    states = TaskStates()
    assert _load(platform, states) > 0
    stored = states.get(completed_task["task_id"])
    assert stored is not None and stored.status is Status.COMPLETED

    folded = fold(task_history(platform, completed_task["task_id"]), TaskState())
    assert folded.status is Status.COMPLETED
    assert folded.sequence == completed_task["last_sequence"]


def test_a_resubmitted_finished_task_is_not_run_again(
    platform: Settings, completed_task: dict[str, Any]
) -> None:
    # A key of this run only: the task id derives from it, and the read model outlives test runs.
    key = f"states-redelivery-{uuid.uuid4()}"
    body = {"query": QUERY}
    with api(platform) as client:
        first = client.post("/v1/tasks", json=body, headers={"Idempotency-Key": key}).json()["task_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = client.get(f"/v1/tasks/{first}")
            if view.status_code == 200 and view.json()["status"] == "completed":
                if view.json()["event_count"] == view.json()["last_sequence"] + 1:
                    break
            time.sleep(0.2)
        events_before = view.json()["event_count"]
        # Same idempotency key: same task id, a second TaskSubmitted record on the requests topic.
        assert (
            client.post("/v1/tasks", json=body, headers={"Idempotency-Key": key}).json()["task_id"] == first
        )
    time.sleep(3)  # ample for the processor to (wrongly) start a second run
    rows = pg_rows(platform, "SELECT count(*) AS n FROM task_events WHERE task_id = %s", first)
    assert rows[0]["n"] == events_before
    assert len(task_history(platform, first)) == events_before
