"""Scaling the processor 1 -> 2 -> 1 while multi-step tasks flow: two consumer-group rebalances.

One worker runs under ``agentlog serve``; a second one is started beside it as its own process
(the serve processor's environment, its own faust data dir) and later stopped with SIGTERM, a
graceful scale-down, while tasks are still being submitted. Each worker talks to its own scripted
LLM server (the same scripts), so the calls each worker made are counted separately: the test
cannot pass with the second worker idle.

Proved: every task completes; the log holds no event twice and no two versions of a sequence; the
read model holds each event once; every history folds; an LLM call is made again only if it was in
flight at a rebalance, and then at most once more; tasks keep completing in every phase; the
processor group's committed offsets reach the log end once the last task is done; after both
rebalances, every task resubmitted under its idempotency key runs nothing again (the owner of each
partition knows what the other worker finished there). A second test holds an LLM call in flight
for longer than the group's rebalance timeout across a rebalance: one worker at a time runs it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from processors.task.decider import fold
from processors.task.worker import app_id
from streams.settings import Settings
from streams.topics import REQUESTS
from tests.fixtures.log_copies import every_copy
from tests.fixtures.platform import ScriptedPlatform, processor_group_lag, running_platform, serve_processor
from tests.fixtures.scripted_llm import ScriptedLlm, Step, providers_yaml, start
from tests.integration.conftest import api, pg_rows, wait_for

STEPS = 4  # LLM calls per task: three with a (pure) calculator call, then the answer
SUBMIT_EVERY = 0.5  # seconds between submissions: a steady stream, several tasks in flight at once
PHASE_SECONDS = 10.0  # tasks submitted in each phase once its assignment is settled
SLOW_CALL_SECONDS = 70.0  # longer than the group's rebalance timeout (faust's default, 60 s)


@dataclass
class TwoLlms:
    """One scripted server per worker, sharing the scripts; each request's time, per key, per server."""

    first: ScriptedLlm
    second: ScriptedLlm
    times: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, llm: ScriptedLlm, name: str) -> None:
        original = llm.answer

        def timed(body: dict[str, Any], key: str) -> Any:
            with self.lock:
                repeat = key in self.times
                self.times[key].append((time.time(), name))
            status, answer, delay = original(body, key)
            # A call made again (after a rebalance) answers at once: only the first one is slow.
            return status, answer, min(delay, 1.0) if repeat else delay

        llm.answer = timed  # type: ignore[method-assign]


def _patient(providers: str) -> str:
    """The scripted providers file with a request timeout longer than the slowest scripted call."""
    loaded = yaml.safe_load(providers)
    for provider in loaded["providers"]:
        provider["timeout_seconds"] = 2 * SLOW_CALL_SECONDS
    return str(yaml.safe_dump(loaded))


@pytest.fixture(scope="module")
def rebalance_platform(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ScriptedPlatform, TwoLlms, Path]]:
    home = tmp_path_factory.mktemp("agentlog-rebalance")
    for first in start(ScriptedLlm()):
        for second in start(ScriptedLlm(scripts=first.scripts)):
            llms = TwoLlms(first, second)
            llms.record(first, "worker-1")
            llms.record(second, "worker-2")
            (home / "providers.yaml").write_text(_patient(providers_yaml(first.url)))
            (home / "providers-2.yaml").write_text(_patient(providers_yaml(second.url)))
            env = {
                "AGENTLOG_LLM_PROVIDERS_FILE": str(home / "providers.yaml"),
                "AGENTLOG_LLM_CACHE_ENABLED": "false",
                "AGENTLOG_PROCESSOR_WORKERS": "1",
            }
            with running_platform(stack, home, **env) as (settings, process):
                yield ScriptedPlatform(settings, first, process), llms, home


def _start_second_worker(
    serve_pid: int, home: Path, log_name: str = "worker-2.log"
) -> tuple[subprocess.Popen[bytes], Path]:
    """A second processor with the serve processor's environment, its own data dir and LLM server."""
    env = dict(serve_processor(serve_pid).environ())
    env["AGENTLOG_FAUST_DATA_DIR"] = str(home / "faust" / "worker-2")
    env["AGENTLOG_LLM_PROVIDERS_FILE"] = str(home / "providers-2.yaml")
    log_path = home / log_name
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "run", "processor"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,
        )
    return process, log_path


async def _assignment(settings: Settings) -> tuple[str, list[set[int]]]:
    """The processor group's state and, per member, the requests-topic partitions it owns."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([app_id(settings)])
    finally:
        await admin.close()
    _, _, state, _, _, members = described[0].groups[0]
    topic = REQUESTS.name(settings)
    owned = []
    for member in members:
        raw = member[-1]
        partitions: set[int] = set()
        if raw:
            decoded = ConsumerProtocolMemberAssignment.decode(raw)
            for name, numbers in decoded.assignment:
                if name == topic:
                    partitions.update(numbers)
        owned.append(partitions)
    return str(state), owned


def _owners(settings: Settings) -> list[set[int]] | None:
    """Members' partitions once the group is stable (None while it rebalances)."""
    state, owned = asyncio.run(_assignment(settings))
    return owned if state == "Stable" else None


def test_scaling_the_processor_1_2_1_while_tasks_flow(
    rebalance_platform: tuple[ScriptedPlatform, TwoLlms, Path],
) -> None:
    platform, llms, home = rebalance_platform
    settings = platform.settings
    partitions = set(range(REQUESTS.partition_count(settings)))
    name = f"rebalance-{uuid.uuid4().hex[:8]}"
    calc = Step(tool_calls=(("calculator", {"expression": "6 * 7"}),), delay=0.6)
    llms.first.scripts[name] = [calc, calc, calc, Step(content="all done", delay=0.6)]
    wait_for(lambda: _owners(settings) == [partitions], 120, "the serve worker to own every partition")

    task_ids: list[str] = []
    stop_submitting = threading.Event()
    submit_errors: list[str] = []

    def submit() -> None:
        with api(settings) as client:
            for i in itertools.count():
                if stop_submitting.is_set():
                    return
                reply = client.post(
                    "/v1/tasks",
                    json={"query": f"Rebalance test {i} [[{name}]]"},
                    headers={"Idempotency-Key": f"{name}-{i}"},
                )
                if reply.status_code != 202:
                    submit_errors.append(reply.text)
                else:
                    task_ids.append(reply.json()["task_id"])
                time.sleep(SUBMIT_EVERY)

    submitter = threading.Thread(target=submit, daemon=True)
    began = time.time()
    submitter.start()
    second: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(PHASE_SECONDS)
        # Scale up.
        second, second_log = _start_second_worker(platform.process.pid, home)
        second_started = time.time()
        wait_for(
            lambda: (owned := _owners(settings)) is not None and len(owned) == 2 and all(owned),
            120,
            "the second worker to own partitions",
        )
        second_owns = time.time()
        time.sleep(PHASE_SECONDS)
        # Scale down, gracefully, while tasks still flow.
        second.send_signal(signal.SIGTERM)
        second_stopped = time.time()
        wait_for(lambda: _owners(settings) == [partitions], 120, "the first worker to own every partition")
        first_owns_all = time.time()
        assert second.wait(60) is not None
        time.sleep(PHASE_SECONDS)
    finally:
        stop_submitting.set()
        submitter.join(30)
        if second is not None and second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    submitted_until = time.time()
    assert not submit_errors, submit_errors

    def all_done() -> list[dict[str, Any]] | None:
        # The read model itself, not the API: polling every task through it hits the rate limit.
        views = pg_rows(
            settings,
            "SELECT task_id, status, result, error, event_count, last_sequence FROM task_executions"
            " WHERE task_id = ANY(%s)",
            task_ids,
        )
        ended = [
            v
            for v in views
            if v["status"] in ("completed", "failed") and v["event_count"] == v["last_sequence"] + 1
        ]
        return views if len(ended) == len(task_ids) else None

    try:
        views = wait_for(all_done, 240, "every task to end")
    except AssertionError:
        seen = pg_rows(
            settings,
            "SELECT task_id, status, event_count, last_sequence FROM task_executions WHERE task_id = ANY(%s)",
            task_ids,
        )
        raise AssertionError(f"tasks did not all end: {seen}\nworker-2 log: {second_log}") from None
    all_done_at = time.time()
    assert [v["status"] for v in views] == ["completed"] * len(task_ids), [v["error"] for v in views]

    # Lag: the group commits past every submission once the tasks are done.
    wait_for(lambda: processor_group_lag(settings) == 0, 120, "the processor group's lag to reach zero")
    lag_zero_at = time.time()

    rebalances = [(second_started, second_owns), (second_stopped, first_owns_all)]

    # Every task submitted again under its key, now that each partition has changed hands twice:
    # the worker that owns it must know the task ran (whoever ran it) and run nothing again.
    with api(settings) as client:
        for i, task_id in enumerate(task_ids):
            while True:
                reply = client.post(
                    "/v1/tasks",
                    json={"query": f"Rebalance test {i} [[{name}]]"},
                    headers={"Idempotency-Key": f"{name}-{i}"},
                )
                if reply.status_code != 429:  # the caller's rate limit: wait as told
                    break
                time.sleep(float(reply.headers["Retry-After"]))
            assert reply.status_code == 202 and reply.json()["task_id"] == task_id, reply.text
    resubmitted_at = time.time()
    wait_for(lambda: processor_group_lag(settings) == 0, 120, "the resubmissions to be handled")

    # The log: every event once, one version of each sequence; the submission twice (resubmitted).
    on_log = asyncio.run(every_copy(settings, set(task_ids)))
    ended_at: dict[str, float] = {}
    redone = 0
    for task_id in task_ids:
        copies = Counter(e.sequence for e in on_log[task_id])
        assert copies[0] == 2 and all(n == 1 for s, n in copies.items() if s > 0), (
            task_id,
            {s: n for s, n in copies.items() if n > 1},
        )
        history = sorted(
            {e.sequence: e for e in reversed(on_log[task_id])}.values(), key=lambda e: e.sequence
        )
        folded = fold(history)  # raises on a gap or a broken hash link
        assert folded.status.value == "completed"
        ended_at[task_id] = history[-1].envelope.occurred_at.timestamp()
        assert ended_at[task_id] < resubmitted_at, task_id
        rows = pg_rows(
            settings,
            "SELECT count(*) AS n, count(DISTINCT sequence) AS d FROM task_events WHERE task_id = %s",
            task_id,
        )
        assert rows[0]["n"] == rows[0]["d"] == len(history)
        keys = [e.payload.idempotency_key for e in history if e.event_type == "LlmCallCompleted"]
        assert len(keys) == len(set(keys)) == STEPS
        for key in keys:
            times = sorted(llms.times[key])
            # A repeat only for a call in flight at a rebalance: asked before one ended, again
            # after it began.
            assert 1 <= len(times) <= 2, (key, times)
            if len(times) == 2:
                (before, _), (after, _) = times
                assert any(before <= end and after >= begin for begin, end in rebalances), (
                    key,
                    times,
                    rebalances,
                )
                redone += 1

    by_worker = Counter(name for key_times in llms.times.values() for _, name in key_times)
    assert by_worker["worker-2"] > 0 and by_worker["worker-1"] > 0, by_worker
    # Only worker 2 served the phase it owned partitions in, and it stopped making calls on SIGTERM.
    worker_2_times = [t for key_times in llms.times.values() for t, name in key_times if name == "worker-2"]
    assert min(worker_2_times) >= second_started and max(worker_2_times) <= first_owns_all, (
        second_started,
        first_owns_all,
        min(worker_2_times),
        max(worker_2_times),
    )

    # No stall: tasks completed in every phase.
    phases = {
        "one worker": (began, second_started),
        "two workers": (second_owns, second_stopped),
        "one worker again": (first_owns_all, submitted_until),
    }
    for phase, (start_at, end_at) in phases.items():
        ended = [t for t in ended_at.values() if start_at <= t <= end_at]
        assert ended, f"no task completed during phase {phase!r}"
    completions = sorted(ended_at.values())
    longest_gap = max(b - a for a, b in itertools.pairwise(completions))

    print(
        f"\n{len(task_ids)} tasks x {STEPS} calls, 2 rebalances;"
        f" LLM calls by worker: {dict(by_worker)}; in-flight calls made once more: {redone}"
        f"\nsecond worker started -> owns partitions: {second_owns - second_started:.1f}s"
        f"\nsecond worker SIGTERM -> first owns all again: {first_owns_all - second_stopped:.1f}s"
        f"\nlast submission -> last task ended on the log: {max(completions) - submitted_until:.1f}s,"
        f" -> every task done in the read model: {all_done_at - submitted_until:.1f}s;"
        f" -> group lag zero: {lag_zero_at - submitted_until:.1f}s"
        f"\nlongest gap between two task completions: {longest_gap:.1f}s"
    )


def test_a_call_longer_than_the_rebalance_timeout_is_not_run_by_two_workers(
    rebalance_platform: tuple[ScriptedPlatform, TwoLlms, Path],
) -> None:
    """A worker does not hold up a rebalance until its running tasks end: a task whose LLM call
    outlasts the rebalance timeout must not be resumed by the new owner of its partition while
    the old one still runs it (two writers of one task: duplicate sequences on the log). Its
    call is abandoned at the rebalance and made once more, under the same key, by the owner."""
    platform, llms, home = rebalance_platform
    settings = platform.settings
    partitions = set(range(REQUESTS.partition_count(settings)))
    wait_for(lambda: _owners(settings) == [partitions], 120, "the serve worker to own every partition")
    name = f"slow-{uuid.uuid4().hex[:8]}"
    llms.first.scripts[name] = [Step(content="slow but done", delay=SLOW_CALL_SECONDS)]
    with api(settings) as client:
        reply = client.post("/v1/tasks", json={"query": f"Slow call [[{name}]]"})
        assert reply.status_code == 202, reply.text
    task_id = reply.json()["task_id"]
    wait_for(lambda: any(key.startswith(task_id) for key in list(llms.times)), 60, "the slow call to start")

    second, _ = _start_second_worker(platform.process.pid, home, "worker-2-slow.log")
    started = time.time()
    try:
        wait_for(
            lambda: (owned := _owners(settings)) is not None and len(owned) == 2 and all(owned),
            120,
            "the second worker to own partitions",
        )
        rebalanced = time.time() - started

        def ended() -> dict[str, Any] | None:
            with api(settings) as client:
                view = client.get(f"/v1/tasks/{task_id}").json()
            return view if view.get("status") in ("completed", "failed") else None

        view = wait_for(ended, 2 * SLOW_CALL_SECONDS + 60, "the slow task to end")
        # Until the first request's answer is due and recorded, were its worker still running it.
        [key] = [k for k in llms.times if k.startswith(task_id)]
        first_request = llms.times[key][0][0]
        time.sleep(max(0.0, first_request + SLOW_CALL_SECONDS + 10 - time.time()))
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
    assert view["status"] == "completed" and view["result"] == "slow but done", view
    on_log = asyncio.run(every_copy(settings, {task_id}))[task_id]
    copies = Counter(e.sequence for e in on_log)
    assert all(n == 1 for n in copies.values()), {s: n for s, n in copies.items() if n > 1}
    fold(sorted(on_log, key=lambda e: e.sequence))
    assert len(llms.times[key]) == 2, llms.times[key]  # abandoned at the rebalance, made once more
    # The rebalance did not wait for the slow call to end.
    assert rebalanced < SLOW_CALL_SECONDS / 2, rebalanced
    print(
        f"\nslow call in flight: second worker owned partitions {rebalanced:.1f}s after its start;"
        f" requests: {llms.times[key]}"
    )
