"""``agentlog serve``: every component as its own process under one supervisor.

Separate processes because faust and FastAPI sharing one event loop is a known trap, and because
the projectors' hot loops should not steal time from the API. A child that dies is restarted with
backoff; SIGTERM/SIGINT stop all children.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from streams.metrics import WORKER_COMPONENTS
from streams.settings import Settings

console = Console(stderr=True)

MAX_BACKOFF_SECONDS = 30.0


@dataclass
class Child:
    component: str
    log_path: Path = Path("/dev/null")
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "run", self.component.split("#")[0]],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started_at = time.monotonic()


def components(settings: Settings) -> list[Child]:
    """The children of ``serve``; processor workers are ``processor#N``, each with its own data dir."""
    names = ["api", "projector-postgres", "projector-elasticsearch", "auditor"]
    if settings.offline:
        names.insert(0, "offline-llm")
    # With AGENTLOG_REGISTRY_URL pointing at an external Confluent-compatible registry, the
    # platform uses that one and serves none of its own.
    if settings.registry_url is None:
        names.insert(0, "registry")
    children = [Child(name) for name in names] + [
        Child(
            f"processor#{index}",
            env={"AGENTLOG_FAUST_DATA_DIR": str(Path(settings.faust_data_dir) / f"worker-{index}")},
        )
        for index in range(1, settings.processor_workers + 1)
    ]
    ports = metrics_ports(settings)
    for child in children:
        if child.component in ports:
            child.env["AGENTLOG_METRICS_PORT"] = str(ports[child.component])
    return children


def metrics_ports(settings: Settings) -> dict[str, int]:
    """Where each worker child of ``serve`` serves /metrics: ``metrics_port`` + its index in the
    order projector-postgres, projector-elasticsearch, auditor, processor#1, processor#2, ... (so
    with the default 9100 the projectors are on 9100 and 9101, the auditor on 9102 and processor#N
    on 9102+N). One host runs them all, so each needs its own port. With ``metrics_port`` 0 every
    child picks a free port and logs it. The API, registry and offline LLM serve no worker metrics
    (the API has /metrics on its own port)."""
    workers = [name for name in WORKER_COMPONENTS if name != "processor"] + [
        f"processor#{index}" for index in range(1, settings.processor_workers + 1)
    ]
    base = settings.metrics_port
    return {name: base + index if base else 0 for index, name in enumerate(workers)}


def supervise(settings: Settings, log_dir: Path) -> int:
    """Run every component until signalled; returns the exit code."""
    children = components(settings)
    for child in children:
        child.log_path = log_dir / f"{child.component.replace('#', '-')}.log"
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for child in children:
        child.start()
        metrics = child.env.get("AGENTLOG_METRICS_PORT")
        console.print(
            f"[green]started[/] {child.component} (pid {child.process.pid if child.process else '?'})"
            f" log: {child.log_path}"
            + (f" metrics: http://127.0.0.1:{metrics}/metrics" if metrics and metrics != "0" else "")
        )
    try:
        while not stopping:
            time.sleep(0.5)
            for child in children:
                if child.process is None or child.process.poll() is None:
                    continue
                code = child.process.returncode
                now = time.monotonic()
                if child.next_start == 0.0:
                    # Quick repeated crashes back off exponentially; a long healthy run resets it.
                    healthy = now - child.started_at > 60
                    child.restarts = 0 if healthy else child.restarts + 1
                    delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2**child.restarts)
                    child.next_start = now + delay
                    console.print(
                        f"[red]{child.component} exited with {code}[/]; restarting in {delay:.1f}s "
                        f"(see {child.log_path})"
                    )
                elif now >= child.next_start:
                    child.next_start = 0.0
                    child.start()
    finally:
        for child in children:
            if child.process is not None and child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
    return 0
