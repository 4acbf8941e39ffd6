"""``kill -9`` of the processor in the middle of many multi-step tasks, at different moments.

The supervisor restarts it; every task must complete; no LLM call whose completion was recorded
before a kill is made again; a call in flight at a kill is made at most once more, under the same
idempotency key (the scripted server counts requests per key); no event is duplicated in the read
model, and every task's history on the log folds without a broken link.
"""

from __future__ import annotations

import itertools
import random
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from processors.task.decider import fold
from streams.settings import Settings
from tests.fixtures.platform import ScriptedPlatform, running_platform
from tests.fixtures.scripted_llm import ScriptedLlm, Step, providers_yaml, start
from tests.integration.conftest import api, pg_rows, task_history, wait_for

TASKS = 8
STEPS = 4  # LLM calls per task: three with a (pure) calculator call, then the answer
KILLS = 3


@pytest.fixture(scope="module")
def crash_platform(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedPlatform]:
    home = tmp_path_factory.mktemp("agentlog-crash")
    for llm in start(ScriptedLlm()):
        providers = home / "providers.yaml"
        providers.write_text(providers_yaml(llm.url))
        env = {"AGENTLOG_LLM_PROVIDERS_FILE": str(providers), "AGENTLOG_LLM_CACHE_ENABLED": "false"}
        with running_platform(stack, home, **env) as (settings, process):
            yield ScriptedPlatform(settings, llm, process)


def _processor(serve: int) -> psutil.Process:
    def found() -> psutil.Process | None:
        for child in psutil.Process(serve).children(recursive=True):
            try:
                if "processor" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    return wait_for(found, 60, "a running processor")  # type: ignore[no-any-return]


def test_kill_9_mid_task_loses_nothing_and_redoes_no_recorded_call(crash_platform: ScriptedPlatform) -> None:
    platform, llm = crash_platform, crash_platform.llm
    name = f"crash-{uuid.uuid4().hex[:8]}"
    calc = Step(tool_calls=(("calculator", {"expression": "6 * 7"}),), delay=0.8)
    llm.scripts[name] = [calc, calc, calc, Step(content="all done", delay=0.8)]
    request_times: dict[str, list[float]] = {}
    original_answer = llm.answer

    def timed_answer(body: dict[str, Any], key: str) -> Any:
        request_times.setdefault(key, []).append(time.time())
        return original_answer(body, key)

    llm.answer = timed_answer  # type: ignore[method-assign]
    task_ids = []
    with api(platform.settings) as client:
        for i in range(TASKS):
            body = {"query": f"Crash test {i} [[{name}]]"}
            reply = client.post("/v1/tasks", json=body)
            assert reply.status_code == 202, reply.text
            task_ids.append(reply.json()["task_id"])

    kills: list[float] = []
    rng = random.Random(7)
    total = TASKS * STEPS
    # Kill at different moments of the run: after about a quarter, a half and three quarters of
    # the calls were made, plus a random delay so a kill also lands mid-call.
    for quarter in range(1, KILLS + 1):
        made = quarter * total // (KILLS + 1)
        wait_for(lambda made=made: sum(len(t) for t in request_times.values()) >= made, 120, f"{made} calls")
        time.sleep(rng.uniform(0.0, 0.5))
        victim = _processor(platform.process.pid)
        kills.append(time.time())
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        wait_for(lambda victim=victim: _processor(platform.process.pid).pid != victim.pid, 60, "a restart")

    def all_done() -> list[dict[str, Any]] | None:
        views = []
        with api(platform.settings) as client:
            for task_id in task_ids:
                reply = client.get(f"/v1/tasks/{task_id}")
                if reply.status_code != 200:
                    return None
                view = reply.json()
                if (
                    view["status"] not in ("completed", "failed")
                    or view["event_count"] != view["last_sequence"] + 1
                ):
                    return None
                views.append(view)
        return views

    try:
        views = wait_for(all_done, 240, "every task to end after the kills")
    except AssertionError:
        with api(platform.settings) as client:
            seen = {t: client.get(f"/v1/tasks/{t}").json() for t in task_ids}
        summary = {
            t: (v.get("status"), v.get("event_count"), v.get("last_sequence")) for t, v in seen.items()
        }
        raise AssertionError(f"tasks did not all end after the kills: {summary}") from None
    assert [v["status"] for v in views] == ["completed"] * TASKS, [v["error"] for v in views]
    assert {v["result"] for v in views} == {"all done"}

    redone = 0
    for task_id in task_ids:
        history = task_history(platform.settings, task_id)
        folded = fold(history)  # raises on a gap or a broken hash link
        assert folded.status.value == "completed"
        completions = {e.payload.idempotency_key: e for e in history if e.event_type == "LlmCallCompleted"}
        assert len(completions) == STEPS
        rows = pg_rows(
            platform.settings,
            "SELECT count(*) AS n, count(DISTINCT sequence) AS d FROM task_events WHERE task_id = %s",
            task_id,
        )
        assert rows[0]["n"] == rows[0]["d"] == len(history)
        completed_rows = pg_rows(
            platform.settings,
            "SELECT payload->>'idempotency_key' AS k, count(*) AS n FROM task_events"
            " WHERE task_id = %s AND event_type = 'LlmCallCompleted' GROUP BY 1",
            task_id,
        )
        assert all(row["n"] == 1 for row in completed_rows) and len(completed_rows) == STEPS
        for key, completion in completions.items():
            times = sorted(request_times.get(key, []))
            assert 1 <= len(times) <= 1 + KILLS, (key, times)
            # Every repeat is explained by a kill between it and the request before it (the call was
            # in flight, its answer not yet recorded): at most once more per kill, never otherwise.
            for before, after in itertools.pairwise(times):
                assert any(before <= kill <= after for kill in kills), (key, times, kills)
            # And the answer on the log is the one to the last request: nothing recorded was redone.
            assert completion.envelope.occurred_at.timestamp() >= times[-1] - 0.05, (key, times)
            redone += len(times) - 1
    # The kills caught calls in flight (every task has one outstanding most of the time); never more
    # than one per task and kill was made again.
    assert 1 <= redone <= KILLS * TASKS
    print(f"\n{KILLS} kills, {TASKS} tasks x {STEPS} calls: {redone} in-flight calls made once more")
