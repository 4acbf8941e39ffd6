"""Orchestration on the real stack with the offline planner: a planned task runs its DAG in parallel;
the prompt cache answers a repeated prompt without a provider call, recorded as a free cache hit."""

from __future__ import annotations

import uuid
from typing import Any

from streams.settings import Settings
from tests.integration.conftest import api, submit_and_wait

THREE_PARTS = "What is 12 * 7? What is 100 / 4? Then summarise both results."


def _events(settings: Settings, task_id: str) -> list[dict[str, Any]]:
    with api(settings) as client:
        return client.get(f"/v1/tasks/{task_id}/events", params={"limit": 1000}).json()["events"]


def test_a_standard_task_runs_a_three_node_dag_with_two_subtasks_in_parallel(platform: Settings) -> None:
    view = submit_and_wait(platform, {"query": THREE_PARTS})
    assert view["status"] == "completed", view
    assert view["execution_mode"] == "standard"
    events = _events(platform, view["task_id"])
    types = [e["event_type"] for e in events]
    [plan] = [e["payload"] for e in events if e["event_type"] == "PlanDecided"]
    assert [(s["subtask_id"], s["depends_on"]) for s in plan["subtasks"]] == [
        ("s1", []),
        ("s2", []),
        ("s3", ["s1", "s2"]),
    ]
    position = {
        (e["event_type"], e["payload"].get("agent_id") or e["payload"].get("subtask_id")): e["sequence"]
        for e in events
    }
    # s1 and s2 were both asked for before either finished: they ran in parallel.
    first_done = min(position[("SubtaskCompleted", "s1")], position[("SubtaskCompleted", "s2")])
    assert position[("SubtaskStarted", "s1")] < first_done and position[("SubtaskStarted", "s2")] < first_done
    # s3 started only after both of its dependencies completed, and the merge came last.
    assert position[("SubtaskStarted", "s3")] > max(
        position[("SubtaskCompleted", "s1")], position[("SubtaskCompleted", "s2")]
    )
    assert types.count("SubtaskCompleted") == 3 and types[-1] == "TaskCompleted"
    # Each calculator subtask used the tool: 84 and 25 reach the merged answer.
    assert "84" in view["result"] and "25" in view["result"]


def test_a_repeated_prompt_is_a_recorded_cache_hit_at_no_cost(platform: Settings) -> None:
    # Unique per run: the cache lives in Redis for an hour, across test sessions.
    body = {"query": f"What is 31 * 3? (cache check {uuid.uuid4()})"}
    first = submit_and_wait(platform, body)
    second = submit_and_wait(platform, body)
    assert first["status"] == second["status"] == "completed"
    assert second["result"] == first["result"]
    completed = [
        e["payload"] for e in _events(platform, second["task_id"]) if e["event_type"] == "LlmCallCompleted"
    ]
    assert completed and all(c["cache_hit"] and c["cache_kind"] == "EXACT" for c in completed)
    assert all(c["cost_usd"] == 0.0 for c in completed)
    originals = [
        e["payload"] for e in _events(platform, first["task_id"]) if e["event_type"] == "LlmCallCompleted"
    ]
    assert not any(c["cache_hit"] for c in originals)
