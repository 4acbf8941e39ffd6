"""Time travel on the real stack: the state folded from the log after event N is the processor's
own checkpoint at N, for every checkpoint of a planned multi-agent task; the CLI and REST agree."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from audit.timetravel import diff_states, state_at, subtask_tree
from processors.task.state import TaskState
from schemas.codec import EventCodec
from schemas.events import CheckpointSaved, Event
from schemas.registry.client import RegistryClient
from streams.history import partition_for
from streams.settings import Settings
from streams.topics import TASK_STATE
from tests.integration.conftest import api, submit_and_wait, task_history

THREE_PARTS = "What is 12 * 7? What is 100 / 4? Then summarise both results."


def _cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "AGENTLOG_TOPIC_PREFIX": settings.topic_prefix,
        "AGENTLOG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AGENTLOG_REGISTRY_PORT": str(settings.registry_port),
        "AGENTLOG_API_PORT": str(settings.api_port),
    }


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env={**_cli_env(settings), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def checkpoints(settings: Settings, task_id: str) -> list[tuple[int, TaskState]]:
    """Every CheckpointSaved of the task on the task-state topic (its sequence and state), decoded as
    a restarting worker decodes them (processors/task/states.py)."""

    async def read() -> list[tuple[int, TaskState]]:
        registry = RegistryClient(settings.schema_registry_url)
        codec = EventCodec(registry)
        topic = TASK_STATE.name(settings)
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        found: list[tuple[int, TaskState]] = []
        try:
            tp = TopicPartition(topic, partition_for(task_id, TASK_STATE.partition_count(settings)))
            consumer.assign([tp])
            start = (await consumer.beginning_offsets([tp]))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
            consumer.seek(tp, start)
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.key != task_id.encode():
                        continue
                    event = await codec.decode(record.value)
                    assert isinstance(event.payload, CheckpointSaved)
                    found.append(
                        (event.envelope.sequence, TaskState.model_validate_json(event.payload.state_json))
                    )
        finally:
            await consumer.stop()
            await registry.close()
        return found

    return asyncio.run(read())


@pytest.fixture(scope="module")
def planned_task(platform: Settings) -> tuple[str, list[Event]]:
    view = submit_and_wait(platform, {"query": THREE_PARTS})
    assert view["status"] == "completed", view
    events = task_history(platform, view["task_id"])
    assert any(e.event_type == "PlanDecided" for e in events)
    return view["task_id"], events


def test_time_travel_equals_the_live_state_at_every_checkpoint(
    platform: Settings, planned_task: tuple[str, list[Event]]
) -> None:
    task_id, events = planned_task
    saved = checkpoints(platform, task_id)
    # One checkpoint per decision: the submission's acceptance, the plan, each answer, the merge.
    assert len(saved) >= 5, [sequence for sequence, _ in saved]
    for sequence, live in saved:
        assert state_at(events, sequence) == live, f"state after event {sequence} differs from its checkpoint"
    assert saved[-1][0] == events[-1].sequence


def test_the_cli_shows_state_diff_and_tree(platform: Settings, planned_task: tuple[str, list[Event]]) -> None:
    task_id, events = planned_task
    last = events[-1].sequence
    plan_at = next(e.sequence for e in events if e.event_type == "PlanDecided")

    state = cli(platform, "state", task_id, "--at", str(plan_at), "--json")
    assert state.returncode == 0, state.stderr
    document = json.loads(state.stdout)
    assert document["sequence"] == plan_at and document["event_type"] == "PlanDecided"
    assert TaskState.model_validate(document["state"]) == state_at(events, plan_at)

    at_time = cli(
        platform, "state", task_id, "--at-time", events[-1].envelope.occurred_at.isoformat(), "--json"
    )
    assert at_time.returncode == 0, at_time.stderr
    assert json.loads(at_time.stdout)["state"]["status"] == "completed"

    beyond = cli(platform, "state", task_id, "--at", str(last + 1))
    assert beyond.returncode == 1 and f"its events are 0..{last}" in beyond.stderr

    diff = cli(platform, "diff", task_id, "--from", str(plan_at - 1), "--to", str(plan_at), "--json")
    assert diff.returncode == 0, diff.stderr
    changes = json.loads(diff.stdout)["changes"]
    expected = diff_states(state_at(events, plan_at - 1), state_at(events, plan_at))
    assert changes == [c.model_dump(mode="json") for c in expected]
    assert {"op": "replace", "path": "/sequence", "before": plan_at - 1, "after": plan_at} in changes

    table = cli(platform, "diff", task_id, "--from", "0", "--to", str(last))
    assert table.returncode == 0 and "/status" in table.stdout

    rows = cli(platform, "replay", task_id, "--json")
    assert rows.returncode == 0, rows.stderr
    timeline = json.loads(rows.stdout)
    assert [r["sequence"] for r in timeline] == [e.sequence for e in events]
    assert {r["agent"] for r in timeline if r["event_type"] == "LlmCallCompleted"} >= {"main"}
    assert all("cost_usd" in r and "since_previous_ms" in r for r in timeline)

    tree = cli(platform, "replay", task_id, "--tree", "--json")
    assert tree.returncode == 0, tree.stderr
    assert json.loads(tree.stdout) == json.loads(subtask_tree(events).model_dump_json())
    shown = cli(platform, "replay", task_id, "--tree")
    assert shown.returncode == 0 and "completed" in shown.stdout


def test_the_rest_endpoints_read_the_same_history(
    platform: Settings, planned_task: tuple[str, list[Event]]
) -> None:
    task_id, events = planned_task
    last = events[-1].sequence
    with api(platform, role="viewer") as client:
        timeline = client.get(f"/v1/tasks/{task_id}/timeline")
        assert timeline.status_code == 200, timeline.text
        assert [r["sequence"] for r in timeline.json()["rows"]] == [e.sequence for e in events]

        for n in (0, last // 2, last):
            reply = client.get(f"/v1/tasks/{task_id}/state", params={"at": n})
            assert reply.status_code == 200, reply.text
            assert TaskState.model_validate(reply.json()["state"]) == state_at(events, n)
        at_time = client.get(
            f"/v1/tasks/{task_id}/state", params={"at_time": events[1].envelope.occurred_at.isoformat()}
        )
        assert at_time.status_code == 200 and at_time.json()["sequence"] >= 1

        diff = client.get(f"/v1/tasks/{task_id}/diff", params={"from": 0, "to": last})
        assert diff.status_code == 200, diff.text
        body: dict[str, Any] = diff.json()
        assert body["from"] == 0 and body["to"] == last
        assert {"op": "replace", "path": "/status", "before": "submitted", "after": "completed"} in body[
            "changes"
        ]

        tree = client.get(f"/v1/tasks/{task_id}/subtask-tree")
        assert tree.status_code == 200 and len(tree.json()["subtasks"]) >= 1

        bad_params: list[dict[str, str | int]] = [
            {"at": last + 1},
            {},
            {"at": 0, "at_time": "2030-01-01T00:00:00Z"},
            {"at_time": "2030-01-01T00:00:00"},  # no zone
        ]
        for params in bad_params:
            bad = client.get(f"/v1/tasks/{task_id}/state", params=params)
            assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
        assert client.get(f"/v1/tasks/{task_id}/diff", params={"from": 3, "to": 1}).status_code == 422

    with api(platform, org="other-org", role="viewer") as stranger:
        assert stranger.get(f"/v1/tasks/{task_id}/timeline").status_code == 404
        assert stranger.get(f"/v1/tasks/{task_id}/state", params={"at": 0}).status_code == 404
