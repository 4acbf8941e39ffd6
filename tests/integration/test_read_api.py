"""The read models through the REST API: a task's LLM calls, tool calls and agents; an org's usage and
sessions; each scoped to the caller's org."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from streams.settings import Settings
from tests.integration.conftest import api, submit_and_wait

PLANNED = "What is 12 * 7? What is 100 / 4? Then summarise both results."


def test_a_planned_tasks_calls_agents_usage_and_session_are_served(platform: Settings) -> None:
    org, session = f"org-{uuid.uuid4().hex[:8]}", f"session-{uuid.uuid4().hex[:8]}"
    view = submit_and_wait(platform, {"query": PLANNED, "session_id": session}, org=org)
    assert view["status"] == "completed", view
    task_id = view["task_id"]
    with api(platform, org=org, role="viewer") as client:
        llm_calls = client.get(f"/v1/tasks/{task_id}/llm-calls").json()
        tool_calls = client.get(f"/v1/tasks/{task_id}/tool-calls").json()
        agents = client.get(f"/v1/tasks/{task_id}/agents").json()
        usage = client.get("/v1/usage").json()
        served_session = client.get(f"/v1/sessions/{session}").json()
        assert client.get("/v1/usage", params={"from": "2030-01-02", "to": "2030-01-01"}).status_code == 422
    with api(platform, org="other") as client:
        assert client.get(f"/v1/tasks/{task_id}/llm-calls").status_code == 404
        assert client.get(f"/v1/sessions/{session}").status_code == 404
    assert len(llm_calls) == view["llm_calls"] and all(c["status"] == "completed" for c in llm_calls)
    assert len(tool_calls) == view["tool_calls"] == 2  # a calculator call in each arithmetic subtask
    assert {a["agent_id"] for a in agents} == {"main", "s1", "s2", "s3"}
    [today] = [u for u in usage if u["day"] == datetime.now(UTC).date().isoformat()]
    assert today["calls"] == view["llm_calls"] and today["total_tokens"] == view["total_tokens"]
    assert served_session["task_count"] == 1 and served_session["tokens_used"] == view["total_tokens"]
