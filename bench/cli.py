"""``make bench`` / ``python -m bench``: run the suite, print every figure against its goal, save it.

Sections run one after another (never two at once: on a 2-core machine they would measure each
other). A full run appends to ``bench/results/<date>-<machine>.json`` and rewrites the table in
docs/benchmarks.md; ``--quick`` (the CI smoke) writes ``.agentlog/bench/quick.json`` only and
never fails on timings, only on errors.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer
from rich.console import Console
from rich.table import Table

from bench.context import PEERS_PYTHON, REPO, BenchContext
from bench.goals import judge_all
from bench.platform_run import free_port
from streams.settings import Settings
from streams.stack_check import stack_problems

console = Console()
app = typer.Typer(add_completion=False, help=__doc__)

# Section name -> module (each has ``async def run(ctx) -> figures``), in the order they run.
# The comparisons (pipeline, peers) run before the backlog sections, whose after-effects
# (Elasticsearch merges, Postgres autovacuum of a million rows) would otherwise load the machine.
SECTIONS: dict[str, str] = {
    "serde": "bench.serde_bench",
    "replay": "bench.replay",
    "pipeline": "bench.pipeline",
    "peers": "bench.peers_section",
    "raw": "bench.raw_kafka",
    "projection": "bench.projection",
    "rebuild": "bench.rebuild",
}
QUIET_CPU_PERCENT = 25.0
SETTLE_TIMEOUT_S = 60.0
RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "benchmarks.md"
TABLE_START, TABLE_END = "<!-- bench:table:start -->", "<!-- bench:table:end -->"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.findall(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[0])
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(settings: Settings) -> dict[str, str]:
    found: dict[str, str] = {}
    for package in (
        "agentlog",
        "aiokafka",
        "faust-streaming",
        "fastavro",
        "psycopg",
        "elasticsearch",
        "openai",
    ):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "missing"
    try:
        found["elasticsearch-server"] = httpx.get(settings.elasticsearch_url, timeout=5).json()["version"][
            "number"
        ]
    except (httpx.HTTPError, KeyError, ValueError):
        found["elasticsearch-server"] = "unknown"
    kafka = re.search(r"^KAFKA_VERSION=([0-9.]+)", (REPO / "deploy/local/kafka.sh").read_text(), re.M)
    found["kafka-server"] = kafka.group(1) if kafka else "unknown"
    pg = subprocess.run(
        ["psql", settings.postgres_dsn, "-Atc", "show server_version"], capture_output=True, text=True
    )
    found["postgres-server"] = pg.stdout.strip() or "unknown"
    if PEERS_PYTHON.exists():
        probe = (
            "import importlib.metadata as m, json; "
            "names = ('langgraph', 'langgraph-checkpoint-postgres', 'dbos'); "
            "print(json.dumps({p: m.version(p) for p in names}))"
        )
        out = subprocess.run([str(PEERS_PYTHON), "-c", probe], capture_output=True, text=True)
        if out.returncode == 0:
            found.update(json.loads(out.stdout))
    return found


class CannedLlm:
    """The canned OpenAI-compatible server every contender talks to, in its own process."""

    def __enter__(self) -> str:
        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.llm_server", "--port", str(port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.1)
        self.process.kill()
        stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
        raise RuntimeError(f"canned LLM server did not start: {stderr}")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def print_report(figures: dict[str, Any], notes: list[str]) -> None:
    table = Table(title="agentlog bench: goals")
    for column in ("goal", "target", "measured", "met"):
        table.add_column(column)
    for goal, verdict in judge_all(figures):
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]n/a[/]"}[verdict.met]
        table.add_row(goal.name, goal.target, verdict.measured, met)
    console.print(table)
    figure_table = Table(title="figures")
    figure_table.add_column("figure")
    figure_table.add_column("value", justify="right")
    for key in sorted(figures):
        figure_table.add_row(key, str(figures[key]))
    console.print(figure_table)
    for note in notes:
        console.print(f"[dim]note:[/] {note}")


def goals_markdown(figures: dict[str, Any]) -> str:
    lines = ["| goal | target | measured | met |", "|---|---|---|---|"]
    for goal, verdict in judge_all(figures):
        met = {True: "yes", False: "**no**", None: "n/a"}[verdict.met]
        lines.append(f"| {goal.name} | {goal.target} | {verdict.measured} | {met} |")
    lines += ["", "| figure | value |", "|---|---|"]
    lines += [f"| `{key}` | {figures[key]} |" for key in sorted(figures)]
    return "\n".join(lines)


def write_docs(run: dict[str, Any]) -> None:
    """Replace the generated table in docs/benchmarks.md (the prose around it is written by hand)."""
    m = run["machine"]
    block = (
        f"{TABLE_START}\n_Generated by `make bench` on {run['date']}: {m['cpus']} x {m['cpu_model']}, "
        f"{m['memory_gib']} GiB, Python {m['python']}; Kafka {run['versions'].get('kafka-server')}, "
        f"PostgreSQL {run['versions'].get('postgres-server')}, Elasticsearch "
        f"{run['versions'].get('elasticsearch-server')}, LangGraph {run['versions'].get('langgraph', '?')}, "
        f"DBOS {run['versions'].get('dbos', '?')}. Wall time {run['seconds']:.0f} s._\n\n"
        f"{goals_markdown(run['figures'])}\n{TABLE_END}"
    )
    text = DOCS.read_text() if DOCS.exists() else f"# Benchmarks\n\n{TABLE_START}\n{TABLE_END}\n"
    if TABLE_START not in text:
        text += f"\n{TABLE_START}\n{TABLE_END}\n"
    head, rest = text.split(TABLE_START, 1)
    tail = rest.split(TABLE_END, 1)[1]
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(head + block + tail)


def save(run: dict[str, Any], quick: bool) -> Path:
    if quick:
        path = REPO / ".agentlog" / "bench" / "quick.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run, indent=2, default=str))
        return path
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{run['date'][:10]}-{run['machine']['host']}.json"
    # One file per day and machine; each run is appended, the latest also at the top level.
    earlier: list[dict[str, Any]] = []
    if path.exists():
        previous = json.loads(path.read_text())
        earlier = [*previous.pop("earlier_runs", []), previous]
    path.write_text(json.dumps({**run, "earlier_runs": earlier}, indent=2, default=str))
    return path


async def settle(ctx: BenchContext, section: str) -> None:
    """Wait until the machine is quiet (every figure is CPU-bound); say so if it never gets there."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    busy = 100.0
    while time.monotonic() < deadline:
        busy = await asyncio.to_thread(psutil.cpu_percent, 1.0)
        if busy < QUIET_CPU_PERCENT:
            return
    ctx.note(
        f"{section}: the machine was still {busy:.0f}% busy after {SETTLE_TIMEOUT_S:.0f} s;"
        " its figures may be low"
    )


async def run_sections(ctx: BenchContext, names: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
    figures: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name in names:
        module = importlib.import_module(SECTIONS[name])
        console.rule(f"[bold]{name}")
        await settle(ctx, name)
        began = time.monotonic()
        section_figures = await module.run(ctx)
        timings[name] = round(time.monotonic() - began, 1)
        figures.update(section_figures)
        console.print(f"{name}: {len(section_figures)} figures in {timings[name]} s")
    return figures, timings


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="CI smoke: tiny sizes, < 3 minutes, results not kept.")] = False,
    only: Annotated[
        str | None, typer.Option(help=f"Comma-separated sections of: {', '.join(SECTIONS)}")
    ] = None,
    docs: Annotated[bool, typer.Option(help="Rewrite the table in docs/benchmarks.md (full runs).")] = True,
) -> None:
    """Run the benchmark suite against the running local stack (`make up`)."""
    settings = Settings()
    if problems := stack_problems(settings):
        console.print("[red]the local stack is not fully up (run `make up`):[/]\n  " + "\n  ".join(problems))
        raise typer.Exit(2)
    names = list(SECTIONS) if only is None else [n.strip() for n in only.split(",") if n.strip()]
    if unknown := [n for n in names if n not in SECTIONS]:
        raise typer.BadParameter(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    if "peers" in names:
        from bench.peer_runner import ensure_peers_venv

        ensure_peers_venv()
    began = time.monotonic()
    with CannedLlm() as llm_url:
        ctx = BenchContext(settings=settings, quick=quick, llm_url=llm_url)
        figures, timings = asyncio.run(run_sections(ctx, names))
    run = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "sections": names,
        "seconds": round(time.monotonic() - began, 1),
        "section_seconds": timings,
        "machine": machine(),
        "versions": versions(settings),
        "figures": figures,
        "goals": {
            g.name: {"target": g.target, "measured": v.measured, "met": v.met} for g, v in judge_all(figures)
        },
        "notes": ctx.notes,
    }
    print_report(figures, ctx.notes)
    path = save(run, quick)
    console.print(f"results: {path}  ({run['seconds']:.0f} s)")
    if docs and not quick and only is None:
        write_docs(run)
        console.print(f"docs: {DOCS}")
