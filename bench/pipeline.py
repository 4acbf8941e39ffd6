"""Section 2: the platform's whole pipeline under load (Kafka, processor, both projections).

For 1 and 2 processor processes and K = 1, 5, 20: the highest sustained tasks/s (closed loop,
every client always has a task in flight), latency submit -> ``TaskCompleted`` visible in Postgres,
and CPU per step of every platform process plus the broker, Postgres and Elasticsearch. Then, on
the better configuration: latency at an offered load of half that maximum (open loop, Poisson
arrivals) and one task at a time (unloaded).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from bench.context import BenchContext
from bench.measure import (
    CpuMeter,
    LoadResult,
    closed_loop,
    open_loop,
    percentile,
    sequential,
    service_pids,
)
from bench.platform_run import Platform, TaskClient, start_platform

console = Console(stderr=True)
Figures = dict[str, Any]

# Clients in flight per processor worker: enough to keep it busy (throughput is flat from ~12 on),
# not so many that tasks only queue (which would lengthen p99 without adding throughput); the
# peers are measured the same way (bench/peers_section.py).
CLIENTS_PER_WORKER = 12


async def _throughput(ctx: BenchContext, platform: Platform, steps: int) -> tuple[LoadResult, float, float]:
    """Max sustained tasks/s at K = steps; returns the load result, CPU-ms per step, events per task."""
    meter = CpuMeter(lambda: [platform.pid, *service_pids()])
    cpu: dict[str, float] = {}

    def window(opening: bool) -> None:
        if opening:
            meter.start()
        else:
            cpu["seconds"] = meter.stop()

    async with TaskClient(platform.settings, steps=steps) as client:
        await sequential(client.run_one, count=2, warmup=2)  # consumer groups joined, caches warm
        result = await closed_loop(
            client.run_one,
            concurrency=CLIENTS_PER_WORKER * platform.workers,
            warmup_s=ctx.seconds(5, 3),
            measure_s=ctx.seconds(15, 5),
            on_window=window,
        )
        events = sum(client.events_per_task) / max(1, len(client.events_per_task))
    cpu_ms_per_step = cpu["seconds"] * 1000 / max(1, result.completed * steps)
    per_component = sorted(meter.by_component.items(), key=lambda item: -item[1])
    ctx.note(
        f"pipeline K={steps}, {platform.workers} processor(s): CPU-ms per step by component: "
        + ", ".join(
            f"{name} {seconds * 1000 / max(1, result.completed * steps):.2f}"
            for name, seconds in per_component
        )
    )
    return result, cpu_ms_per_step, events


async def run(ctx: BenchContext) -> Figures:
    figures: Figures = {}
    step_counts = [5] if ctx.quick else [1, 5, 20]
    worker_counts = [1] if ctx.quick else [1, 2]
    best: dict[int, tuple[float, int]] = {}  # K -> (tasks/s, workers)
    per_config: dict[tuple[int, int], tuple[LoadResult, float, float]] = {}
    for workers in worker_counts:
        platform = start_platform(ctx, workers=workers, name=f"pipeline-w{workers}")
        try:
            for steps in step_counts:
                result, cpu_ms, events = await _throughput(ctx, platform, steps)
                per_config[(steps, workers)] = (result, cpu_ms, events)
                console.print(
                    f"  platform K={steps} workers={workers}: {result.tasks_per_s:.1f} tasks/s, "
                    f"p99 {result.summary()['p99_ms']} ms, {cpu_ms:.2f} CPU-ms/step, {events:.0f} events/task"
                )
                figures[f"pipeline_tasks_per_s_k{steps}_w{workers}"] = round(result.tasks_per_s, 2)
                if result.tasks_per_s > best.get(steps, (0.0, 0))[0]:
                    best[steps] = (result.tasks_per_s, workers)
        finally:
            platform.stop()
    for steps, (tasks_per_s, workers) in best.items():
        result, cpu_ms, events = per_config[(steps, workers)]
        figures[f"pipeline_tasks_per_s_k{steps}"] = round(tasks_per_s, 2)
        figures[f"pipeline_best_workers_k{steps}"] = workers
        figures[f"pipeline_p50_ms_k{steps}"] = result.summary()["p50_ms"]
        figures[f"pipeline_p99_ms_k{steps}"] = result.summary()["p99_ms"]
    k5, workers5 = best[5]
    _, cpu_ms5, events5 = per_config[(5, workers5)]
    figures["pipeline_events_per_s"] = round(k5 * events5, 1)
    figures["pipeline_events_per_task_k5"] = round(events5, 1)
    figures["cpu_ms_per_step_platform"] = round(cpu_ms5, 3)

    platform = start_platform(ctx, workers=workers5, name=f"latency-w{workers5}")
    try:
        async with TaskClient(platform.settings, steps=5) as client:
            unloaded = await sequential(client.run_one, count=ctx.size(40, 10), warmup=3)
            client.visible_ms.clear()
            half = await open_loop(client.run_one, rate_per_s=k5 / 2, measure_s=ctx.seconds(20, 5))
            visible = list(client.visible_ms)
    finally:
        platform.stop()
    figures["p50_unloaded_task_ms_k5"] = unloaded.summary()["p50_ms"]
    figures["p99_unloaded_task_ms_k5"] = unloaded.summary()["p99_ms"]
    figures["half_load_tasks_per_s"] = round(k5 / 2, 2)
    figures["p50_submit_to_visible_ms_half_load"] = round(percentile(visible, 50), 2)
    figures["p99_submit_to_visible_ms_half_load"] = round(percentile(visible, 99), 2)
    figures["p50_task_ms_k5_half_load"] = half.summary()["p50_ms"]
    figures["p99_task_ms_k5_half_load"] = half.summary()["p99_ms"]
    ctx.note(
        "Platform tasks are submitted as TaskSubmitted events produced to the requests topic (the path "
        "other systems use); 'done' is the Postgres projector's NOTIFY at commit of the completed row; "
        "'submit -> visible' is from the acknowledged submission to the commit of the task's row. "
        "CPU counts every platform process (registry, API, processors, both projectors) plus the Kafka "
        "broker, Postgres and Elasticsearch; the canned LLM server and the load generator are excluded."
    )
    return figures
