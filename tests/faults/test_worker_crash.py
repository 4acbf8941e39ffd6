"""``kill -9`` of the processor in the middle of many multi-step tasks, at different moments.

The supervisor restarts it; every task must complete; no LLM or tool call whose completion was
recorded before a kill is made again; a call in flight at a kill is made at most once more, under
the same idempotency key (the scripted LLM server and the counting HTTP server behind ``http_fetch``
count requests per key); no event is duplicated in the read model, and every task's history on the
log folds without a broken link. It ends with the reconciliation oracle: the log against itself,
Postgres and Elasticsearch, and every recorded effect against the servers' counts: zero differences.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from audit.effects import EffectDifference
from processors.task.decider import fold
from projections.reconcile import ReconcileReport, reconcile
from schemas.events import Event, LlmCallCompleted, ToolCallCompleted
from streams.settings import Settings
from tests.fixtures import counting_http
from tests.fixtures.counting_http import CountingHttp
from tests.fixtures.platform import ScriptedPlatform, running_platform, serve_processor
from tests.fixtures.scripted_llm import ScriptedLlm, Step, providers_yaml, start
from tests.integration.conftest import api, pg_rows, task_history, wait_for

TASKS = 8
# LLM calls per task: a (pure) calculator call, an http_fetch of the counting server (an external
# effect, performed after its request is on the log), another calculator call, then the answer.
STEPS = 4
KILLS = 3
FETCH_SECONDS = 0.8  # the counting server's answer time, so that a kill can catch a fetch in flight


@dataclass(frozen=True)
class CrashPlatform(ScriptedPlatform):
    site: CountingHttp


@pytest.fixture(scope="module")
def crash_platform(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashPlatform]:
    home = tmp_path_factory.mktemp("agentlog-crash")
    for llm in start(ScriptedLlm()):
        for site in counting_http.start(CountingHttp()):
            providers = home / "providers.yaml"
            providers.write_text(providers_yaml(llm.url))
            env = {
                "AGENTLOG_LLM_PROVIDERS_FILE": str(providers),
                "AGENTLOG_LLM_CACHE_ENABLED": "false",
                "AGENTLOG_TOOL_HTTP_ALLOW_HOSTS": json.dumps([site.host]),
            }
            with running_platform(stack, home, **env) as (settings, process):
                yield CrashPlatform(settings, llm, process, site)


def _completion_times(history: list[Event]) -> dict[str, float]:
    """When the result of each LLM and tool call was recorded (by idempotency key)."""
    return {
        e.payload.idempotency_key: e.envelope.occurred_at.timestamp()
        for e in history
        if isinstance(e.payload, LlmCallCompleted | ToolCallCompleted)
    }


def _in_flight(
    request_times: dict[str, list[float]], completed_at: dict[str, float], kills: list[float]
) -> set[str]:
    """The keys whose call was under way at a kill: requested before it, result recorded after it."""
    return {
        key
        for key, times in request_times.items()
        if any(times[0] <= kill <= completed_at.get(key, float("inf")) for kill in kills)
    }


def _oracle(
    settings: Settings, calls: dict[str, int], in_flight: set[str], timeout: float = 120.0
) -> ReconcileReport:
    """The reconciliation oracle, run again while only a projection differs (the audit index may
    still be refreshing or catching up); the log's and the effects' differences are final at once."""
    deadline = time.monotonic() + timeout
    while True:
        report = asyncio.run(reconcile(settings, effect_calls=calls, in_flight=in_flight))
        settled = report.effect_differences or any(d.source == "log" for d in report.differences)
        if report.ok or settled or time.monotonic() > deadline:
            return report
        time.sleep(2)


def _shown(differences: list[EffectDifference]) -> list[tuple[str, str, str, int]]:
    return [(d.key, d.kind, d.allowed, d.calls) for d in differences]


def test_kill_9_mid_task_loses_nothing_and_redoes_no_recorded_call(crash_platform: CrashPlatform) -> None:
    platform, llm, site = crash_platform, crash_platform.llm, crash_platform.site
    name = f"crash-{uuid.uuid4().hex[:8]}"
    calc = Step(tool_calls=(("calculator", {"expression": "6 * 7"}),), delay=0.8)
    fetch = Step(tool_calls=(("http_fetch", {"url": f"{site.base}/slow/{FETCH_SECONDS}/{name}"}),), delay=0.8)
    llm.scripts[name] = [calc, fetch, calc, Step(content="all done", delay=0.8)]
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
    # the calls were requested, plus a random delay so a kill also lands mid-call. Calls are counted
    # by key: counting requests, the calls a restart makes again would bring the next kill about
    # while the same calls are still in flight (all three kills landed during every task's first
    # call that way, and no later step was ever killed).
    serve = platform.process.pid
    for quarter in range(1, KILLS + 1):
        made = quarter * total // (KILLS + 1)
        wait_for(lambda made=made: len(llm.request_times()) >= made, 120, f"{made} calls")
        time.sleep(rng.uniform(0.0, 0.5))
        victim = serve_processor(serve)
        kills.append(time.time())
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        wait_for(lambda victim=victim: serve_processor(serve).pid != victim.pid, 60, "a restart")

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

    request_times = llm.request_times()
    redone = 0
    completed_at: dict[str, float] = {}
    fetch_keys: list[str] = []
    for task_id in task_ids:
        history = task_history(platform.settings, task_id)
        folded = fold(history)  # raises on a gap or a broken hash link
        assert folded.status.value == "completed"
        completed_at |= _completion_times(history)
        fetches = [
            e.payload.idempotency_key
            for e in history
            if isinstance(e.payload, ToolCallCompleted) and e.payload.tool == "http_fetch"
        ]
        assert len(fetches) == 1, (task_id, fetches)
        fetch_keys += fetches
        completions = {
            e.payload.idempotency_key: e for e in history if isinstance(e.payload, LlmCallCompleted)
        }
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
    # Every fetch reached the service under its call's key, and nothing reached it without one.
    assert set(site.counts()) == set(fetch_keys) and site.unkeyed == 0, (site.counts(), fetch_keys)
    fetches_redone = sum(n - 1 for n in site.counts().values())
    # The kills caught calls in flight (every task has one outstanding most of the time); never more
    # than one per task and kill was made again.
    assert 1 <= redone + fetches_redone <= KILLS * TASKS

    # The oracle: the log has no gap, duplicate or broken link and equals both read models; every
    # LLM and fetch call was made once per recorded attempt, once more only if in flight at a kill.
    calls = dict(llm.requests_by_key) | site.counts()
    in_flight = _in_flight({**request_times, **site.times()}, completed_at, kills)
    report = _oracle(platform.settings, calls, in_flight)
    assert report.differences == [], report.differences
    assert report.effect_differences == [], _shown(report.effect_differences)
    assert report.ok and report.undecodable_records == 0
    assert report.totals["log"].tasks == TASKS
    assert report.effects_checked == TASKS * (STEPS + 1)  # the LLM calls and the fetch of each task
    print(
        f"\n{KILLS} kills, {TASKS} tasks x {STEPS} LLM calls + 1 fetch: {redone} in-flight LLM calls and"
        f" {fetches_redone} in-flight fetches made once more; {len(in_flight)} keys in flight at a kill;"
        f" reconcile: {report.totals['log'].events} events, {report.effects_checked} effects, 0 differences"
    )
