"""Runs the peers (:mod:`bench.peers`) as subprocesses of their own virtualenv and measures them.

Runs in the platform's virtualenv; the peers run in ``.venv-peers`` (their dependencies conflict
with the platform's: dbos needs croniter>=6, faust's mode-streaming needs <6). With two processes
the peer's backend is set up once (``--phase setup``), both processes report ready, and only then
is one shared start time sent to both, so their measured windows coincide and CPU is sampled over
exactly that window: the peer processes plus the infrastructure the peer uses (never the canned
LLM server, which serves every contender alike).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.context import PEERS_PYTHON, REPO, BenchContext
from bench.measure import CpuMeter, percentile, service_pids

REQUIREMENTS = REPO / "bench" / "requirements-peers.txt"
PEERS_VENV = PEERS_PYTHON.parents[1]
_STAMP = PEERS_VENV / ".requirements.sha256"
READY_TIMEOUT_S = 120.0  # set-up of one peer process (imports, DBOS launch, consumer start)
START_DELAY_S = 0.3  # from "all ready" to the shared start: time for the start line to arrive


@dataclass(frozen=True)
class PeerSpec:
    """How to run one peer: its module, the services it uses, its best concurrency per process."""

    module: str
    services: tuple[str, ...]  # names for bench.measure.service_pids: counted in its CPU
    concurrency: int
    args: tuple[str, ...] = field(default=())


PEERS: dict[str, PeerSpec] = {
    "nodurability": PeerSpec("bench.peers.nodurability", (), 8),
    "plain_aiokafka": PeerSpec("bench.peers.plain_kafka", ("kafka",), 8),
    "langgraph": PeerSpec("bench.peers.langgraph_pg", ("postgres",), 8),
    "dbos": PeerSpec("bench.peers.dbos_pg", ("postgres",), 4),
}
_runs = itertools.count(1)


def ensure_peers_venv() -> Path:
    """The peers' python, creating or refreshing ``.venv-peers`` when the requirements changed."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if PEERS_PYTHON.exists() and _STAMP.exists() and _STAMP.read_text().strip() == digest:
        return PEERS_PYTHON
    if not PEERS_PYTHON.exists():
        print(f"bench: creating {PEERS_VENV} for the peers (LangGraph, DBOS, aiokafka)", file=sys.stderr)
        # The base interpreter, not this venv's: a venv made from a venv's python still works, but
        # the base one keeps .venv-peers independent of .venv being rebuilt.
        base = Path(getattr(sys, "_base_executable", sys.executable))
        subprocess.run([str(base), "-m", "venv", str(PEERS_VENV)], check=True)
    print(f"bench: installing {REQUIREMENTS.name} into {PEERS_VENV}", file=sys.stderr)
    pip = [str(PEERS_PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    _STAMP.write_text(digest + "\n")
    return PEERS_PYTHON


class PeerProcess:
    """One peer subprocess: its stdout lines as they come and all of its stderr (shown on failure)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.stderr: list[str] = []
        self._readers = [asyncio.create_task(self._stdout()), asyncio.create_task(self._stderr())]

    @classmethod
    async def start(cls, name: str, python: Path, argv: list[str]) -> PeerProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            str(python),
            *argv,
            cwd=str(REPO),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(name, proc)

    async def _stdout(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            await self.lines.put(line.decode().strip())
        await self.lines.put("")  # EOF

    async def _stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode().rstrip())

    def failure(self, what: str) -> RuntimeError:
        tail = "\n".join(self.stderr[-40:])
        return RuntimeError(f"peer {self.name}: {what} (exit {self.proc.returncode})\n{tail}")

    async def next_json(self, timeout: float) -> dict[str, Any]:
        """The next JSON line on stdout; a dead process or a line that is not JSON fails loudly."""
        try:
            line = await asyncio.wait_for(self.lines.get(), timeout)
        except TimeoutError:
            raise self.failure(f"no output within {timeout:.0f}s") from None
        if not line:
            await self.wait()
            raise self.failure("exited before reporting")
        try:
            return json.loads(line)  # type: ignore[no-any-return]
        except json.JSONDecodeError:
            raise self.failure(f"printed {line[:200]!r}") from None

    async def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        await self.proc.stdin.drain()

    async def wait(self) -> int:
        code = await self.proc.wait()
        await asyncio.gather(*self._readers)
        return code

    async def kill(self) -> None:
        """End the process if it still runs (a failed run) and reap it."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.wait()


async def _phase(python: Path, spec: PeerSpec, common: list[str], phase: str) -> None:
    """A one-shot setup or cleanup phase of a multi-process run."""
    proc = await PeerProcess.start(
        f"{spec.module} {phase}", python, ["-m", spec.module, *common, "--phase", phase]
    )
    try:
        report = await proc.next_json(READY_TIMEOUT_S)
        if await proc.wait() != 0 or report.get("phase") != phase:
            raise proc.failure(f"{phase} failed")
    finally:
        await proc.kill()


async def _sleep_until(epoch: float) -> None:
    await asyncio.sleep(max(0.0, epoch - time.time()))


async def run_peer(
    ctx: BenchContext,
    peer: str,
    *,
    k: int,
    mode: str,
    processes: int = 1,
    concurrency: int | None = None,
    warmup_s: float = 1.0,
    measure_s: float = 5.0,
    count: int = 20,
    extra_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run ``peer`` in ``processes`` processes over one shared window; merged numbers and CPU.

    Returns tasks_per_s (sum over processes), p50_ms / p99_ms (over the merged latencies),
    completed, finished_in_window, cpu_ms and cpu_ms_per_step (throughput mode only).
    """
    spec = PEERS[peer]
    python = await asyncio.to_thread(ensure_peers_venv)
    per_process = concurrency or spec.concurrency
    prefix = f"{ctx.prefix('peers')}-{peer}-{next(_runs)}"
    common = [
        f"--k={k}",
        f"--mode={mode}",
        f"--concurrency={per_process}",
        f"--warmup={warmup_s}",
        f"--measure={measure_s}",
        f"--count={count}",
        f"--llm-url={ctx.llm_url}",
        f"--dsn={ctx.settings.postgres_dsn}",
        f"--kafka={ctx.settings.kafka_bootstrap}",
        f"--prefix={prefix}",
        f"--processes={processes}",
        *spec.args,
        *extra_args,
    ]
    single = processes == 1
    if not single:
        await _phase(python, spec, common, "setup")
    procs: list[PeerProcess] = []
    try:
        for index in range(processes):
            argv = ["-m", spec.module, *common, f"--process-index={index}", "--start-at=ready"]
            argv.append("--phase=all" if single else "--phase=run")
            procs.append(await PeerProcess.start(f"{spec.module}[{index}]", python, argv))
        for proc in procs:
            if (await proc.next_json(READY_TIMEOUT_S)).get("ready") is not True:
                raise proc.failure("did not report ready")
        start_at = time.time() + START_DELAY_S
        for proc in procs:
            await proc.send(f"{start_at}\n")
        cpu_s: tuple[float, float] | None = None
        if mode == "throughput":
            peer_pids = [p.proc.pid for p in procs]
            infra_pids = service_pids(spec.services)
            meters = CpuMeter(lambda: peer_pids), CpuMeter(lambda: infra_pids)
            await _sleep_until(start_at + warmup_s)
            for meter in meters:
                meter.start()
            await _sleep_until(start_at + warmup_s + measure_s)
            cpu_s = (meters[0].stop(), meters[1].stop())
        budget = warmup_s + measure_s + 120 if mode == "throughput" else 120 + count * 5
        reports = [await proc.next_json(budget) for proc in procs]
        for proc in procs:
            if await proc.wait() != 0:
                raise proc.failure("failed")
    except BaseException:
        for proc in procs:
            await proc.kill()
        # A killed or failed process may not have dropped its schema / topics: drop them here,
        # without letting a second failure hide the first.
        try:
            await _phase(python, spec, common, "cleanup")
        except Exception as exc:
            print(f"bench: cleanup after a failed {peer} run failed too: {exc}", file=sys.stderr)
        raise
    if not single:
        await _phase(python, spec, common, "cleanup")
    return _merge(reports, k=k, processes=processes, concurrency=per_process, cpu_s=cpu_s)


def _merge(
    reports: list[dict[str, Any]],
    *,
    k: int,
    processes: int,
    concurrency: int,
    cpu_s: tuple[float, float] | None,
) -> dict[str, Any]:
    latencies = [x for report in reports for x in report["latencies_ms"]]
    finished = sum(report["finished_in_window"] for report in reports)
    merged: dict[str, Any] = {
        "processes": processes,
        "concurrency_per_process": concurrency,
        "tasks_per_s": sum(report["tasks_per_s"] for report in reports),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "completed": sum(report["completed"] for report in reports),
        "finished_in_window": finished,
        "errors": sum(report["errors"] for report in reports),
    }
    if cpu_s is not None:
        peer_s, infra_s = cpu_s
        # Over the steps of the tasks that finished in the window (not only those that also started
        # in it): the CPU was sampled over the window, so that is the work it paid for.
        steps = finished * k
        merged["cpu_ms"] = (peer_s + infra_s) * 1000
        merged["cpu_ms_per_step"] = merged["cpu_ms"] / steps if steps else float("nan")
        merged["cpu_ms_per_step_infra"] = infra_s * 1000 / steps if steps else float("nan")
    return merged
