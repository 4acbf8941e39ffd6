"""Forks and comparisons on the real stack (scripted LLM): a completed multi-step task is forked at
an event with a change; the fork's first N events are the source's, its event N is TaskForked, it
continues live to the end, and compare shows both runs and the branch point."""

from __future__ import annotations

import itertools
import json
import subprocess
import uuid
from typing import Any

import pytest

from schemas.events import Event
from tests.fixtures.platform import ScriptedPlatform
from tests.fixtures.scripted_llm import Step
from tests.integration.conftest import TASK_TIMEOUT, api, bearer, task_history, wait_for
from tests.integration.test_produce import AGENTLOG, _cli_env

CALCULATE = Step(tool_calls=(("calculator", {"expression": "6 * 7"}),))


def _script(platform: ScriptedPlatform, *steps: Step) -> str:
    name = f"f-{uuid.uuid4().hex[:10]}"
    platform.llm.scripts[name] = list(steps)
    return name


def _ended(platform: ScriptedPlatform, task_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        with api(platform.settings) as client:
            reply = client.get(f"/v1/tasks/{task_id}")
        view = reply.json() if reply.status_code == 200 else None
        done = view and view["status"] in ("completed", "failed", "cancelled", "rejected")
        return view if done and view["event_count"] == view["last_sequence"] + 1 else None

    return dict(wait_for(ended, TASK_TIMEOUT, f"task {task_id} to end"))


def _completed_source(platform: ScriptedPlatform, *steps: Step) -> tuple[str, list[Event]]:
    script = _script(platform, *steps)
    with api(platform.settings) as client:
        response = client.post("/v1/tasks", json={"query": f"Scripted task [[{script}]]"})
    assert response.status_code == 202, response.text
    task_id = str(response.json()["task_id"])
    assert _ended(platform, task_id)["status"] == "completed"
    return task_id, task_history(platform.settings, task_id)


def _fork(platform: ScriptedPlatform, task_id: str, **body: Any) -> str:
    with api(platform.settings) as client:
        response = client.post(f"/v1/tasks/{task_id}/fork", json=body)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["source_task_id"] == task_id and answer["status"] == "forking"
    return str(answer["task_id"])


def _assert_prefix_copied(source: list[Event], fork: list[Event], at: int) -> None:
    assert [e.sequence for e in fork] == list(range(len(fork)))
    for copy, original in zip(fork[:at], source[:at], strict=True):
        assert copy.payload == original.payload
        assert copy.envelope.causation_id == str(original.envelope.event_id)
        assert copy.envelope.event_id != original.envelope.event_id
    # the fork's hash chain is unbroken through the copies and on
    assert fork[0].envelope.prev_hash is None
    assert all(b.envelope.prev_hash == a.digest for a, b in itertools.pairwise(fork))
    assert fork[at].event_type == "TaskForked"


def test_a_fork_with_another_model_copies_the_prefix_and_continues_live(
    scripted_platform: ScriptedPlatform,
) -> None:
    source_id, source = _completed_source(scripted_platform, CALCULATE, Step(content="It is 42."))
    types = [e.event_type for e in source]
    at = len(types) - 2  # the second model call is pending: its request is the last copied event
    assert types[at - 1] == "LlmCallRequested" and types[at] == "LlmCallCompleted", types
    fork_id = _fork(scripted_platform, source_id, at=at, model="scripted-model-b", set={"max_steps": "6"})
    view = _ended(scripted_platform, fork_id)
    assert view["status"] == "completed" and view["result"] == "It is 42."
    fork = task_history(scripted_platform.settings, fork_id)
    _assert_prefix_copied(source, fork, at)
    forked = fork[at].payload.model_dump()
    assert forked["source_task_id"] == source_id and forked["prefix_events"] == at
    assert forked["model"] == "scripted-model-b" and forked["overrides"] == {"max_steps": "6"}
    assert forked["source_last_event_id"] == str(source[at - 1].envelope.event_id)
    [pending_key] = forked["reissued"]
    assert pending_key.startswith(source_id)
    # the pending call was made again under the fork's key, with the fork's model
    request = fork[at + 1].payload.model_dump()
    assert fork[at + 1].event_type == "LlmCallRequested" and request["model"] == "scripted-model-b"
    assert request["idempotency_key"].startswith(fork_id)
    assert scripted_platform.llm.count(request["idempotency_key"]) == 1
    assert [e.event_type for e in fork[at + 1 :]] == ["LlmCallRequested", "LlmCallCompleted", "TaskCompleted"]
    # ... pinned, so the gateway sent it to that model although the tier's model is another
    assert request["pinned_model"] == "scripted-model-b"
    assert fork[at + 2].payload.model_dump()["model"] == "scripted-model-b"
    assert {e.payload.model_dump()["model"] for e in source if e.event_type == "LlmCallCompleted"} == {
        "scripted-model"
    }

    with api(scripted_platform.settings, role="viewer") as client:
        reply = client.get("/v1/compare", params={"a": source_id, "b": fork_id})
    assert reply.status_code == 200, reply.text
    comparison = reply.json()
    assert comparison["first_difference"] == at
    assert comparison["branch"] == f"{fork_id} is a fork of {source_id} at {at}"
    assert all(row["same"] for row in comparison["rows"][:at])
    assert comparison["rows"][at]["b_type"] == "TaskForked"
    assert comparison["a"]["result"] == comparison["b"]["result"] == "It is 42."
    assert comparison["a"]["llm_calls"] == comparison["b"]["llm_calls"] == 2
    assert comparison["a"]["total_tokens"] == comparison["b"]["total_tokens"] == 240

    cli = subprocess.run(
        [str(AGENTLOG), "compare", source_id, fork_id, "--json"],
        env=_cli_env(scripted_platform.settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["first_difference"] == at


def test_a_fork_before_the_first_call_runs_on_a_new_input(scripted_platform: ScriptedPlatform) -> None:
    source_id, source = _completed_source(scripted_platform, Step(content="first answer"))
    other = _script(scripted_platform, CALCULATE, Step(content="second answer"))
    settings = scripted_platform.settings
    cli = subprocess.run(
        [str(AGENTLOG), "fork", source_id, "--at", "1", "--input", f"Scripted task [[{other}]]", "--json"],
        env={**_cli_env(settings), "AGENTLOG_API_KEY": bearer(settings)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    printed = json.loads(cli.stdout)
    fork_id = printed["task_id"]
    assert printed["view"]["status"] == "completed" and printed["view"]["result"] == "second answer"
    fork = task_history(settings, fork_id)
    _assert_prefix_copied(source, fork, 1)
    assert fork[0].payload == source[0].payload  # the submission is copied as it was
    assert fork[1].payload.model_dump()["input"] == f"Scripted task [[{other}]]"
    types = [e.event_type for e in fork]
    assert types[2] == "TaskAccepted" and "ToolCallCompleted" in types and types[-1] == "TaskCompleted"


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"at": 2}, 422, "inside a decision"),
        ({"at": 999}, 422, "must be between 1 and"),
        ({"at": 1, "set": {"user_role": "admin"}}, 422, "not settable"),
    ],
)
def test_impossible_forks_are_refused_before_anything_is_written(
    scripted_platform: ScriptedPlatform, body: dict[str, Any], status: int, detail: str
) -> None:
    source_id, _ = _completed_source(scripted_platform, Step(content="x"))
    with api(scripted_platform.settings) as client:
        reply = client.post(f"/v1/tasks/{source_id}/fork", json=body)
    assert reply.status_code == status and detail in reply.json()["detail"], reply.text


def test_forks_need_an_operator_of_the_same_org(scripted_platform: ScriptedPlatform) -> None:
    source_id, _ = _completed_source(scripted_platform, Step(content="x"))
    with api(scripted_platform.settings, role="viewer") as client:
        assert client.post(f"/v1/tasks/{source_id}/fork", json={"at": 1}).status_code == 403
    with api(scripted_platform.settings, org="other-org") as client:
        assert client.post(f"/v1/tasks/{source_id}/fork", json={"at": 1}).status_code == 404
        assert client.get("/v1/compare", params={"a": source_id, "b": source_id}).status_code == 404
