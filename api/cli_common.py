"""What every ``agentlog`` command shares: the consoles, the error exit, ``@file`` arguments and the
progress bar of long operations."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console()
err = Console(stderr=True)
# Without a terminal (CI, a pipe), progress is a line this often instead of a bar.
_LINE_INTERVAL_S = 5.0


def fail(message: str) -> typer.Exit:
    """Print ``message`` as an error and return the exit (code 1) to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(1)


ENDED = ("completed", "failed", "cancelled", "rejected")


def wait_for_task(client: httpx.Client, task_id: str, timeout: float) -> dict[str, Any] | None:
    """The task's read model once it has ended and every event is projected; the last view seen
    (or None) when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    view = None
    while time.monotonic() < deadline:
        response = client.get(f"/v1/tasks/{task_id}")
        if response.status_code == 200:
            view = response.json()
            if view["status"] in ENDED and view["event_count"] == view["last_sequence"] + 1:
                return view
        time.sleep(0.2)
    return view


def read_argument(value: str) -> str:
    """A literal argument, or the contents of ``@file`` / ``@-`` (stdin)."""
    if value == "@-":
        try:
            return sys.stdin.read()
        except UnicodeDecodeError as exc:
            raise fail(f"{value}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(f"{value}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise fail(f"{value}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return value


class ProgressBar:
    """A rich bar (done/total, rate, elapsed, ETA) on a terminal; a line every few seconds otherwise;
    nothing when ``quiet`` (e.g. ``--json``). Call it with (done, total) as work advances."""

    def __init__(self, label: str, *, unit: str = "records", quiet: bool = False, transient: bool = False):
        self._label, self._unit, self._quiet = label, unit, quiet
        self._began = self._last_line = time.monotonic()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if not quiet and err.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} " + unit),
                TextColumn("{task.fields[rate]} " + unit + "/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=err,
                transient=transient,
            )
            self._task = self._bar.add_task(label, total=None, rate="-")

    def __enter__(self) -> ProgressBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, done: int, total: int) -> None:
        rate = done / max(time.monotonic() - self._began, 1e-9)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=max(total, 1), rate=f"{rate:,.0f}")
        elif not self._quiet and time.monotonic() - self._last_line >= _LINE_INTERVAL_S:
            self._last_line = time.monotonic()
            eta = f"{(total - done) / rate:,.0f}s" if rate else "?"
            err.print(f"{self._label}: {done:,}/{total:,} {self._unit}, {rate:,.0f}/s, ETA {eta}")
