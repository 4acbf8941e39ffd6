"""Soak: the whole platform (``agentlog serve``) under a steady offered load for minutes.

An open-loop generator submits tasks through the REST API at a fixed rate, whatever the platform's
answers do (a slow platform gets the same arrivals, so queueing shows in the latency instead of
slowing the load). Most tasks are single-step (one LLM call that answers); every fifth is
multi-step (three calculator calls, then the answer: four LLM calls, three tool calls). The LLM is
the scripted server on loopback, answering at once, as in the benchmark: the platform's own costs
are what is measured. The prompt cache is off so every task makes all its calls.

A task is done when the Postgres projector commits its ended row (its ``NOTIFY``, as the benchmark
counts), so latency is submit -> visible in the read model, measured from the moment the generator
was due to send it (a late send counts against the platform, not for it).

Checks, after a warm-up of the first 20 % of the run:
- memory: the resident set of every platform process, sampled every few seconds; the average of
  the last third of the samples within 10 % of the average of the first third;
- no stalled consumer: tasks complete in every 10 s window, every task ends completed, and once
  the load stops the processor's consumer group and both projectors get back to zero lag;
- latency: p99 below ``P99_GOAL_MS`` (see there).

``AGENTLOG_SOAK_SECONDS`` (default 120; ``make soak``: 600) and ``AGENTLOG_SOAK_RATE`` (tasks/s)
set the run. The figures are printed (``-s`` / ``-rA``) and written as JSON to pytest's tmp dir
and to ``.agentlog/soak/latest.json``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from psycopg_pool import AsyncConnectionPool

from projections.lag import projection_lag
from projections.postgres import TASK_CHANNEL
from streams.settings import Settings
from tests.fixtures.platform import ScriptedPlatform, running_platform
from tests.fixtures.scripted_llm import ScriptedLlm, Step, providers_yaml, start
from tests.integration.conftest import bearer

SECONDS = float(os.environ.get("AGENTLOG_SOAK_SECONDS", "120"))
# Offered load. docs/benchmarks.md: the platform's best K = 5 throughput is 31.4 tasks/s (188
# LLM calls/s) and its half load 15.7 tasks/s (94 LLM calls/s), measured on this 2-core machine
# alone. This mix averages 1.6 LLM calls and 0.6 tool calls a task, and the REST API and the test
# itself share the cores (and other engineers' tests share the machine): 8 tasks/s is well below
# half of that capacity, so latency measures the platform, not a queue.
RATE = float(os.environ.get("AGENTLOG_SOAK_RATE", "8"))
MULTI_STEP_EVERY = 5
WARM_UP_SHARE = 0.2
SAMPLE_SECONDS = 3.0
WINDOW_SECONDS = 10.0
MEMORY_GROWTH_LIMIT = 0.10
# The benchmark sets no goal for task latency at half load, only for submit -> visible (< 100 ms,
# not met: 192.6 ms in the last full run). Its measured p99 for a K = 5 task at half load is
# 495 ms (`p99_task_ms_k5_half_load`, docs/benchmarks.md); our tasks are shorter, but they go
# through the REST API, and the machine is shared and its figures move +-30 % between runs. The
# goal is that figure with a margin of 2x.
P99_GOAL_MS = 2 * 495.0
DRAIN_SECONDS = 120.0
RESULTS = Path(__file__).resolve().parents[2] / ".agentlog" / "soak" / "latest.json"


@pytest.fixture(scope="module")
def soak_platform(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedPlatform]:
    home = tmp_path_factory.mktemp("agentlog-soak")
    for llm in start(ScriptedLlm()):
        llm.scripts["soak-one"] = [Step(content="done")]
        calc = Step(tool_calls=(("calculator", {"expression": "6 * 7"}),))
        llm.scripts["soak-multi"] = [calc, calc, calc, Step(content="done")]
        providers = home / "providers.yaml"
        providers.write_text(providers_yaml(llm.url))
        env = {"AGENTLOG_LLM_PROVIDERS_FILE": str(providers), "AGENTLOG_LLM_CACHE_ENABLED": "false"}
        with running_platform(stack, home, **env) as (settings, process):
            yield ScriptedPlatform(settings, llm, process)


# --- the figures (pure) -------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def memory_growth(samples: list[int], warm_up_share: float = WARM_UP_SHARE) -> tuple[float, float, float]:
    """(average just after warm-up, average of the last third, growth as a share) of RSS samples:
    the first ``warm_up_share`` is discarded, the rest is cut in thirds."""
    kept = samples[int(len(samples) * warm_up_share) :]
    third = max(1, len(kept) // 3)
    early, late = statistics.fmean(kept[:third]), statistics.fmean(kept[-third:])
    return early, late, late / early - 1


def completions_per_window(done_at: list[float], start: float, end: float, window: float) -> list[int]:
    """How many tasks completed in each ``window`` seconds from ``start`` up to ``end``."""
    counts = [0] * max(1, int((end - start) // window))
    for at in done_at:
        index = int((at - start) // window)
        if 0 <= index < len(counts):
            counts[index] += 1
    return counts


def test_the_figures_are_computed_as_documented() -> None:
    assert percentile([float(n) for n in range(1, 101)], 0.99) == 99.0
    assert percentile([5.0], 0.99) == 5.0
    early, late, growth = memory_growth([999] * 2 + [100] * 3 + [105] * 3 + [110] * 3)
    assert (early, late) == (100, 110) and abs(growth - 0.10) < 1e-9
    assert completions_per_window([0.5, 1.5, 1.6, 3.9], start=0.0, end=4.0, window=1.0) == [1, 2, 0, 1]


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Submitted:
    number: int
    task_id: str
    due: float  # perf_counter time the generator was due to send it
    multi_step: bool
    done: float | None = None
    status: str | None = None


@dataclass
class Run:
    tasks: dict[str, Submitted] = field(default_factory=dict)
    rss: dict[str, list[int]] = field(default_factory=dict)
    pids: dict[str, set[int]] = field(default_factory=dict)
    submit_errors: list[str] = field(default_factory=list)
    late_sends: int = 0
    ended_early: dict[str, tuple[float, str]] = field(default_factory=dict)
    """Ended tasks not (yet) registered: the NOTIFY can beat the POST's reply to the generator, and
    the channel carries every deployment's tasks on this database."""

    def ended(self, task_id: str, at: float, status: str) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            self.ended_early[task_id] = (at, status)
        elif task.done is None:
            task.done, task.status = at, status

    def register(self, task: Submitted) -> None:
        self.tasks[task.task_id] = task
        early = self.ended_early.pop(task.task_id, None)
        if early is not None:
            task.done, task.status = early


def _component(process: psutil.Process) -> str:
    command = process.cmdline()
    if "run" in command:  # the supervisor's children: python -m api.cli run <component>
        return command[command.index("run") + 1]
    if "serve" in command:
        return "serve"
    return f"{process.name()}-{process.pid}"


def _sample(serve: psutil.Process, run: Run) -> None:
    for process in [serve, *serve.children(recursive=True)]:
        try:
            name, rss = _component(process), process.memory_info().rss
        except psutil.Error:
            continue  # gone between listing and reading: a sandbox or a restart shows in pids
        run.rss.setdefault(name, []).append(rss)
        run.pids.setdefault(name, set()).add(process.pid)


async def _listen(settings: Settings, run: Run, ready: asyncio.Event) -> None:
    async with await psycopg.AsyncConnection.connect(settings.postgres_dsn, autocommit=True) as conn:
        await conn.execute(f"LISTEN {TASK_CHANNEL}")
        ready.set()
        async for notify in conn.notifies():
            task_id, status, _, _ = notify.payload.split(" ")
            if status in ("completed", "failed", "cancelled"):
                run.ended(task_id, time.perf_counter(), status)


async def _submit(client: httpx.AsyncClient, run: Run, number: int, due: float) -> None:
    multi = number % MULTI_STEP_EVERY == 0
    script = "soak-multi" if multi else "soak-one"
    try:
        reply = await client.post("/v1/tasks", json={"query": f"Soak task {number} [[{script}]]"})
    except httpx.HTTPError as exc:
        run.submit_errors.append(f"{number}: {type(exc).__name__}: {exc}")
        return
    if reply.status_code != 202:
        run.submit_errors.append(f"{number}: HTTP {reply.status_code} {reply.text[:200]}")
        return
    run.register(Submitted(number, reply.json()["task_id"], due, multi))


async def _generate(settings: Settings, run: Run, seconds: float, rate: float) -> None:
    """Submit ``rate`` tasks a second for ``seconds``, each on its schedule, never waiting for one."""
    headers = {"Authorization": f"Bearer {bearer(settings, 'soak-org', 'soak', 'operator')}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=f"http://{settings.api_host}:{settings.api_port}", headers=headers, timeout=30, limits=limits
    ) as client:
        start = time.perf_counter()
        sends: set[asyncio.Task[None]] = set()
        for number in range(int(seconds * rate)):
            due = start + number / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.1:
                run.late_sends += 1
            send = asyncio.create_task(_submit(client, run, number, due))
            sends.add(send)
            send.add_done_callback(sends.discard)
        await asyncio.gather(*sends)


async def _sampler(serve: psutil.Process, run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.to_thread(_sample, serve, run)
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
        except TimeoutError:
            pass


async def _processor_lag(settings: Settings) -> int:
    """Records on the processor group's topics it has not committed past (all its partitions)."""
    group = f"{settings.topic_prefix}-processor"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed: dict[TopicPartition, Any] = await admin.list_consumer_group_offsets(group)
        if not committed:
            raise AssertionError(f"the processor group {group} has committed no offsets")
        ends = await consumer.end_offsets(list(committed))
        return sum(max(0, ends[tp] - meta.offset) for tp, meta in committed.items())
    finally:
        await consumer.stop()
        await admin.close()


async def _projector_lag(settings: Settings) -> dict[str, int]:
    async with AsyncConnectionPool(settings.postgres_dsn, min_size=1, max_size=2, open=False) as pool:
        lag = await projection_lag(settings, pool)
    return {p.projector: p.events_behind for p in lag.projectors}


async def _until_zero_lag(settings: Settings, timeout: float) -> tuple[int, dict[str, int], float]:
    started = time.perf_counter()
    while True:
        processor, projectors = await _processor_lag(settings), await _projector_lag(settings)
        waited = time.perf_counter() - started
        if (processor == 0 and not any(projectors.values())) or waited > timeout:
            return processor, projectors, waited
        await asyncio.sleep(1)


async def _soak(platform: ScriptedPlatform, seconds: float, rate: float) -> dict[str, Any]:
    settings, run = platform.settings, Run()
    serve = psutil.Process(platform.process.pid)
    ready, stop = asyncio.Event(), asyncio.Event()
    listener = asyncio.create_task(_listen(settings, run, ready))
    await asyncio.wait_for(ready.wait(), 30)
    sampler = asyncio.create_task(_sampler(serve, run, stop))
    load_before = os.getloadavg()
    start = time.perf_counter()
    await _generate(settings, run, seconds, rate)
    load_end = time.perf_counter()
    load_after = os.getloadavg()
    stop.set()
    await sampler
    for _ in range(int(DRAIN_SECONDS * 2)):
        if all(t.done is not None for t in run.tasks.values()):
            break
        await asyncio.sleep(0.5)
    drained = time.perf_counter() - load_end
    processor_lag, projector_lag, lag_wait = await _until_zero_lag(settings, 60)
    listener.cancel()

    warm_end = start + seconds * WARM_UP_SHARE
    measured = [t for t in run.tasks.values() if t.due >= warm_end and t.done is not None]
    latencies = [(t.done - t.due) * 1000 for t in measured if t.done is not None]
    multi = [(t.done - t.due) * 1000 for t in measured if t.multi_step and t.done is not None]
    windows = completions_per_window(
        [t.done for t in run.tasks.values() if t.done is not None], warm_end, load_end, WINDOW_SECONDS
    )
    memory = {}
    for name, samples in sorted(run.rss.items()):
        if len(samples) >= 6:  # a short-lived child (a sandbox) is not a platform process
            early, late, growth = memory_growth(samples)
            memory[name] = {
                "samples": len(samples),
                "rss_after_warm_up_mb": round(early / 2**20, 1),
                "rss_last_third_mb": round(late / 2**20, 1),
                "growth_pct": round(growth * 100, 2),
                "pids": len(run.pids[name]),
            }
    statuses: dict[str, int] = {}
    for task in run.tasks.values():
        statuses[task.status or "unfinished"] = statuses.get(task.status or "unfinished", 0) + 1
    return {
        "seconds": seconds,
        "offered_rate_per_s": rate,
        "submitted": len(run.tasks),
        "submit_errors": run.submit_errors[:10],
        "submit_error_count": len(run.submit_errors),
        "late_sends": run.late_sends,
        "achieved_rate_per_s": round(len(run.tasks) / max(1e-9, load_end - start), 2),
        "statuses": statuses,
        "measured_tasks": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 1) if latencies else None,
        "p90_ms": round(percentile(latencies, 0.90), 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
        "max_ms": round(max(latencies), 1) if latencies else None,
        "p99_multi_step_ms": round(percentile(multi, 0.99), 1) if multi else None,
        "p99_goal_ms": P99_GOAL_MS,
        "completions_per_10s_window": windows,
        "drain_seconds": round(drained, 1),
        "processor_lag_end": processor_lag,
        "projector_lag_end": projector_lag,
        "lag_wait_seconds": round(lag_wait, 1),
        "memory": memory,
        "memory_growth_limit_pct": MEMORY_GROWTH_LIMIT * 100,
        # The machine is shared: its 1-minute load average (2 cores) before and after the load.
        "machine_load_average": [round(load_before[0], 2), round(load_after[0], 2)],
        "cpu_count": os.cpu_count(),
    }


def _table(figures: dict[str, Any]) -> str:
    lines = [
        f"soak: {figures['seconds']:.0f} s at {figures['offered_rate_per_s']:g} tasks/s offered"
        f" ({figures['achieved_rate_per_s']:g} sent/s, {figures['late_sends']} late sends),"
        f" {figures['submitted']} tasks {figures['statuses']}; machine load average"
        f" {figures['machine_load_average'][0]} -> {figures['machine_load_average'][1]}"
        f" on {figures['cpu_count']} cores",
        f"latency after warm-up ({figures['measured_tasks']} tasks): p50 {figures['p50_ms']} ms,"
        f" p90 {figures['p90_ms']} ms, p99 {figures['p99_ms']} ms (goal < {figures['p99_goal_ms']:g}),"
        f" max {figures['max_ms']} ms; multi-step p99 {figures['p99_multi_step_ms']} ms",
        f"completions per 10 s window: {figures['completions_per_10s_window']}",
        f"drained in {figures['drain_seconds']} s; lag at the end: processor {figures['processor_lag_end']},"
        f" projectors {figures['projector_lag_end']} (after {figures['lag_wait_seconds']} s)",
        f"{'process':<28}{'samples':>8}{'RSS after warm-up MB':>22}{'RSS last third MB':>19}{'growth %':>10}",
    ]
    for name, m in figures["memory"].items():
        lines.append(
            f"{name:<28}{m['samples']:>8}{m['rss_after_warm_up_mb']:>22}{m['rss_last_third_mb']:>19}"
            f"{m['growth_pct']:>10}"
        )
    return "\n".join(lines)


def test_a_steady_load_for_minutes_keeps_memory_flat_consumers_moving_and_p99_in_bounds(
    soak_platform: ScriptedPlatform, tmp_path: Path
) -> None:
    figures = asyncio.run(_soak(soak_platform, SECONDS, RATE))
    text = json.dumps(figures, indent=2)
    (tmp_path / "soak.json").write_text(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print("\n" + _table(figures) + f"\nfigures: {RESULTS}")

    assert figures["submit_error_count"] == 0, figures["submit_errors"]
    assert figures["statuses"] == {"completed": figures["submitted"]}, figures["statuses"]
    assert figures["submitted"] == int(SECONDS * RATE)
    windows = figures["completions_per_10s_window"]
    assert windows and all(n > 0 for n in windows), f"a stalled window: {windows}"
    assert figures["processor_lag_end"] == 0, figures["processor_lag_end"]
    assert not any(figures["projector_lag_end"].values()), figures["projector_lag_end"]
    platform_processes = {"serve", "processor", "projector-postgres", "projector-elasticsearch", "api"}
    assert platform_processes <= figures["memory"].keys(), figures["memory"].keys()
    for name, m in figures["memory"].items():
        assert m["pids"] == 1, f"{name} was restarted during the soak"
        assert m["growth_pct"] <= MEMORY_GROWTH_LIMIT * 100, (name, m)
    assert figures["p99_ms"] is not None and figures["p99_ms"] < P99_GOAL_MS, figures["p99_ms"]
