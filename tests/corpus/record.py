"""Record the re-execution corpus: real tasks on a real platform, their histories read back from Kafka.

    .venv/bin/python -m tests.corpus.record          # needs the local stack (make up); ~2 minutes

Starts the platform twice, as the integration tests do (tests/fixtures/platform.py): once with the
offline planner (a direct answer, a calculator call, a planned task whose subtasks run in
parallel) and once with the scripted LLM (a provider failing then answering, a denied tool call,
an approved one, a cancellation mid-call, an org budget and a task budget refusing a call). Each
history is written to ``tests/corpus/<name>.jsonl`` (audit/corpus.py), replacing the old file.
``tests/unit/audit/test_reexecute.py`` re-executes every file with today's decider.
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from audit.corpus import save_history
from streams.settings import Settings
from streams.stack_check import stack_problems
from tests.fixtures.platform import BUDGETS_USD, running_platform
from tests.fixtures.scripted_llm import ScriptedLlm, Step, providers_yaml, start
from tests.integration.conftest import TASK_TIMEOUT, api, task_history, wait_for
from tests.integration.test_produce import run_cli

CORPUS = Path(__file__).resolve().parent
PYTHON_PRINT = Step(tool_calls=(("python", {"code": "print(6 * 7)"}),))
DONE = Step(content="done")
ENDED = ("completed", "failed", "cancelled", "rejected")


def _submit(settings: Settings, query: str, org: str = "acme", **body: Any) -> str:
    with api(settings, org=org) as client:
        response = client.post("/v1/tasks", json={"query": query, **body})
    if response.status_code != 202:
        raise RuntimeError(f"submission refused: {response.status_code} {response.text}")
    return str(response.json()["task_id"])


def _produce(settings: Settings, query: str, role: str | None) -> str:
    """Submitted on Kafka by another system for a user of ``role`` (the REST API takes operators only)."""
    task_id = f"produced-{uuid.uuid4()}"
    data = {
        "query": query,
        "user_role": role,
        "envelope": {"task_id": task_id, "org_id": "acme", "user_id": "alice"},
    }
    produced = run_cli(settings, "TaskSubmitted", "--data", json.dumps(data))
    if produced.returncode != 0:
        raise RuntimeError(produced.stdout + produced.stderr)
    return task_id


def _events(settings: Settings, task_id: str, org: str = "acme") -> list[dict[str, Any]]:
    with api(settings, org=org) as client:
        reply = client.get(f"/v1/tasks/{task_id}/events", params={"limit": 1000})
    return list(reply.json()["events"]) if reply.status_code == 200 else []


def _ended(settings: Settings, task_id: str, org: str = "acme") -> str:
    def ended() -> str | None:
        with api(settings, org=org) as client:
            reply = client.get(f"/v1/tasks/{task_id}")
        view = reply.json() if reply.status_code == 200 else None
        done = view and view["status"] in ENDED and view["event_count"] == view["last_sequence"] + 1
        return str(view["status"]) if done and view else None

    return str(wait_for(ended, TASK_TIMEOUT, f"task {task_id} to end"))


def _wait_event(settings: Settings, task_id: str, event_type: str) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        return next((e for e in _events(settings, task_id) if e["event_type"] == event_type), None)

    return dict(wait_for(seen, TASK_TIMEOUT, f"{event_type} in task {task_id}"))


def _record(settings: Settings, name: str, task_id: str, status: str, org: str = "acme") -> None:
    ended = _ended(settings, task_id, org)
    if ended != status:
        raise RuntimeError(f"{name}: task {task_id} ended {ended}, expected {status}")
    path = save_history(CORPUS / f"{name}.jsonl", task_history(settings, task_id))
    print(f"recorded {path.name}: task {task_id} ({status})", file=sys.stderr)


def record_offline(settings: Settings) -> None:
    _record(settings, "single-step", _submit(settings, "Say hello in one short sentence."), "completed")
    _record(
        settings, "tool-call", _submit(settings, "What is (17 + 25) * 3? Use the calculator."), "completed"
    )
    query = "What is 12 * 7? What is 100 / 4? Then summarise both results."
    _record(settings, "planned-parallel-subtasks", _submit(settings, query), "completed")


def record_scripted(settings: Settings, llm: ScriptedLlm) -> None:
    def script(*steps: Step) -> str:
        name = f"s-{uuid.uuid4().hex[:10]}"
        llm.scripts[name] = list(steps)
        return f"Scripted task [[{name}]]"

    _record(
        settings, "llm-failure-retry", _submit(settings, script(Step(content="lucky", fail=2))), "completed"
    )
    _record(settings, "tool-denied", _produce(settings, script(PYTHON_PRINT, DONE), role=None), "completed")

    task_id = _produce(settings, script(PYTHON_PRINT, DONE), role="viewer")
    approval_id = _wait_event(settings, task_id, "ApprovalRequested")["payload"]["approval_id"]
    with api(settings, user="bob") as client:
        url = f"/v1/tasks/{task_id}/approvals/{approval_id}/approve"
        reply = client.post(url, json={"reason": "looks safe"})
        if reply.status_code != 202:
            raise RuntimeError(reply.text)
    _record(settings, "approval-granted", task_id, "completed")

    task_id = _submit(settings, script(Step(content="too late", delay=4.0)))
    key = _wait_event(settings, task_id, "LlmCallRequested")["payload"]["idempotency_key"]
    wait_for(lambda: llm.count(key), 10, "the call to be in flight")
    with api(settings) as client:
        reply = client.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "changed my mind"})
        if reply.status_code != 202:
            raise RuntimeError(reply.text)
    _record(settings, "cancelled-mid-call", task_id, "cancelled")

    [org] = BUDGETS_USD
    _record(settings, "org-budget-exceeded", _submit(settings, script(DONE), org=org), "failed", org)
    _record(settings, "task-budget-exceeded", _submit(settings, script(DONE), token_budget=10), "failed")


@contextmanager
def _scripted(stack: Settings, home: Path) -> Iterator[tuple[Settings, ScriptedLlm]]:
    """The scripted platform of tests/fixtures/platform.py (``scripted_platform``)."""
    served = start(ScriptedLlm())
    llm = next(served)
    providers = home / "providers.yaml"
    providers.write_text(providers_yaml(llm.url))
    env = {
        "AGENTLOG_LLM_PROVIDERS_FILE": str(providers),
        "AGENTLOG_LLM_CACHE_ENABLED": "false",
        "AGENTLOG_LLM_ATTEMPTS_PER_PROVIDER": "1",
        "AGENTLOG_MAX_ATTEMPTS": "3",
        "AGENTLOG_ORG_BUDGETS_USD": json.dumps(BUDGETS_USD),
    }
    try:
        with running_platform(stack, home, **env) as (settings, _):
            yield settings, llm
    finally:
        served.close()


def main(only: Callable[[str], bool] = lambda _: True) -> None:
    stack = Settings()
    problems = stack_problems(stack)
    if problems:
        raise SystemExit("the local stack is not up (make up):\n  " + "\n  ".join(problems))
    with tempfile.TemporaryDirectory(prefix="agentlog-corpus-") as tmp:
        if only("offline"):
            home = Path(tmp) / "offline"
            home.mkdir()
            with running_platform(stack, home) as (settings, _):
                record_offline(settings)
        if only("scripted"):
            home = Path(tmp) / "scripted"
            home.mkdir()
            with _scripted(stack, home) as (settings, llm):
                record_scripted(settings, llm)


if __name__ == "__main__":
    wanted = set(sys.argv[1:])
    main(lambda part: not wanted or part in wanted)
