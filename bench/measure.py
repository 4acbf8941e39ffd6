"""Measuring tools shared by every bench section: load drivers, percentiles and CPU accounting.

Stdlib + psutil only, so the peers' virtualenv can import it too.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RunOne = Callable[[int], Awaitable[None]]


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class LoadResult:
    """Tasks completed in the measured window and their latencies (ms)."""

    completed: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def tasks_per_s(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def summary(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}tasks_per_s": round(self.tasks_per_s, 2),
            f"{prefix}p50_ms": round(percentile(self.latencies_ms, 50), 2),
            f"{prefix}p95_ms": round(percentile(self.latencies_ms, 95), 2),
            f"{prefix}p99_ms": round(percentile(self.latencies_ms, 99), 2),
            f"{prefix}completed": self.completed,
            f"{prefix}errors": self.errors,
        }


async def closed_loop(
    run_one: RunOne,
    *,
    concurrency: int,
    warmup_s: float,
    measure_s: float,
    on_window: Callable[[bool], None] | None = None,
) -> LoadResult:
    """``concurrency`` clients each run task after task; tasks that finish in the window count.

    A sustained load (every client always busy), not a burst: the system is at its steady state
    when the window opens and the window closes before the clients stop. ``on_window(True)`` and
    ``on_window(False)`` are called when the window opens and closes (e.g. to sample CPU).
    """
    if on_window is not None:
        loop = asyncio.get_running_loop()
        loop.call_later(warmup_s, on_window, True)
        loop.call_later(warmup_s + measure_s, on_window, False)
    counter = iter(range(10**12))
    start = time.perf_counter() + warmup_s
    end = start + measure_s
    result = LoadResult(completed=0, seconds=measure_s)

    async def client() -> None:
        while (began := time.perf_counter()) < end:
            try:
                await run_one(next(counter))
            except Exception:
                result.errors += 1
                raise
            finished = time.perf_counter()
            # Counted by finish time (whenever started): counting only tasks that also started in
            # the window would undercount throughput by about latency / window.
            if start <= finished <= end:
                result.completed += 1
                result.latencies_ms.append((finished - began) * 1000)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return result


async def open_loop(run_one: RunOne, *, rate_per_s: float, measure_s: float, seed: int = 7) -> LoadResult:
    """Poisson arrivals at ``rate_per_s`` for ``measure_s``; latency of every task, however long."""
    rng = random.Random(seed)
    result = LoadResult(completed=0, seconds=measure_s)
    tasks: list[asyncio.Task[None]] = []

    async def timed(number: int) -> None:
        began = time.perf_counter()
        await run_one(number)
        result.latencies_ms.append((time.perf_counter() - began) * 1000)
        result.completed += 1

    began = time.perf_counter()
    due = began
    number = 0
    while due < began + measure_s:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed(number)))
        number += 1
        due += rng.expovariate(rate_per_s)
    await asyncio.gather(*tasks)
    result.seconds = max(measure_s, time.perf_counter() - began)
    return result


async def sequential(run_one: RunOne, *, count: int, warmup: int = 3) -> LoadResult:
    """One task at a time (unloaded latency)."""
    result = LoadResult(completed=0, seconds=0.0)
    for number in range(warmup + count):
        began = time.perf_counter()
        await run_one(number)
        elapsed = time.perf_counter() - began
        if number >= warmup:
            result.latencies_ms.append(elapsed * 1000)
            result.completed += 1
            result.seconds += elapsed
    return result


# -- CPU accounting ------------------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class CpuMeter:
    """CPU seconds (user + system) spent by process trees between :meth:`start` and :meth:`stop`.

    Children that exit in between are counted through their parent's reaped-children times;
    processes born in between count in full.
    """

    def __init__(self, roots: Callable[[], Iterable[int]]) -> None:
        self._roots = roots
        self._before: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self.by_component: dict[str, float] = {}

    def _sample(self) -> dict[int, float]:
        sample: dict[int, float] = {}
        for root in set(self._roots()):
            for proc in _tree(root):
                try:
                    times = proc.cpu_times()
                    self._names.setdefault(proc.pid, _component(proc))
                except psutil.NoSuchProcess:
                    continue
                sample[proc.pid] = times.user + times.system + times.children_user + times.children_system
        return sample

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> float:
        """CPU seconds since :meth:`start`; :attr:`by_component` holds them per component."""
        after = self._sample()
        self.by_component = {}
        for pid, cpu in after.items():
            name = self._names.get(pid, "other")
            self.by_component[name] = self.by_component.get(name, 0.0) + max(
                0.0, cpu - self._before.get(pid, 0.0)
            )
        return sum(self.by_component.values())


def _component(proc: psutil.Process) -> str:
    """A short name for a measured process: the platform component it runs, or the service."""
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    for marker, name in (
        ("run processor", "processor"),
        ("run projector-postgres", "projector-postgres"),
        ("run projector-elasticsearch", "projector-elasticsearch"),
        ("run api", "api"),
        ("run registry", "registry"),
        ("run offline-llm", "offline-llm"),
        ("kafka.Kafka", "kafka"),
        ("elasticsearch", "elasticsearch"),
        ("postgres", "postgres"),
        ("api.cli serve", "supervisor"),
    ):
        if marker in command:
            return name
    return "other"


# Where each service listens by default (the same AGENTLOG_*_PORT variables move them).
_SERVICE_PORTS = {
    "kafka": ("AGENTLOG_KAFKA_PORT", 9092),
    "postgres": ("AGENTLOG_PG_PORT", 5432),
    "elasticsearch": ("AGENTLOG_ES_PORT", 9200),
}


def service_pids(names: Iterable[str] = ("kafka", "postgres", "elasticsearch")) -> list[int]:
    """Pids of the local stack's services, one per name; raises if one cannot be found.

    deploy/local writes ``.agentlog/run/<name>.pid`` for the services it started; a service it
    reused (already running) is found by the port it listens on.
    """
    repo_home = Path(__file__).resolve().parents[1] / ".agentlog"
    run_dir = Path(os.environ.get("AGENTLOG_HOME", repo_home)) / "run"
    pids = []
    for name in names:
        path = run_dir / f"{name}.pid"
        if path.exists() and (text := path.read_text().strip()).isdigit():
            pids.append(int(text))
        else:
            pids.append(_listening_pid(name))
    return pids


def _listening_pid(name: str) -> int:
    variable, default = _SERVICE_PORTS[name]
    port = int(os.environ.get(variable, default))
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return int(connection.pid)
    raise RuntimeError(f"{name}: no pid file in .agentlog/run and no process listening on port {port}")
