"""``agentlog reexecute``: today's decider over recorded histories, from Kafka or a corpus (docs/audit.md)."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.markup import escape

from api.cli_common import ProgressBar, console, err
from audit.reexecute import Report, Summary, reexecute_all
from schemas.events import Event

EXIT_INTERRUPTED = 130
_LINE_INTERVAL_S = 5.0
_SHOWN = 200  # characters of a value in a printed difference


class _Interrupt:
    """Ctrl-C asks the run to stop at the next task (or batch): what was checked is still reported."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def __call__(self) -> bool:
        return self._event.is_set()

    @contextmanager
    def installed(self) -> Iterator[_Interrupt]:
        def handle(signum: int, frame: FrameType | None) -> None:
            if self._event.is_set():
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            self._event.set()
            err.print("[yellow]interrupted: stopping after the current step (Ctrl-C again to abort)[/]")

        previous = signal.signal(signal.SIGINT, handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _usage(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(2)


def _corpus_histories(directory: Path) -> list[list[Event]]:
    from audit.corpus import CorpusError, corpus_files, load_history

    try:
        files = corpus_files(directory)
        if not files:
            raise CorpusError(f"no *.jsonl history in {directory}")
        return [load_history(path) for path in files]
    except CorpusError as exc:
        raise _usage(str(exc)) from exc


async def _one_from_log(task_id: str) -> list[Event]:
    from schemas.codec import EventCodec
    from schemas.registry.client import RegistryClient
    from streams.history import read_task_events
    from streams.settings import get_settings

    settings = get_settings()
    registry = RegistryClient(settings.schema_registry_url)
    try:
        return await read_task_events(settings, EventCodec(registry), task_id)
    finally:
        await registry.close()


async def _all_from_log(
    since: datetime | None, bar: ProgressBar, stop: _Interrupt
) -> tuple[list[list[Event]], bool]:
    from audit.histories import read_all_histories
    from schemas.codec import EventCodec
    from schemas.registry.client import RegistryClient
    from streams.settings import get_settings

    settings = get_settings()
    registry = RegistryClient(settings.schema_registry_url)
    try:
        found = await read_all_histories(settings, EventCodec(registry), since=since, progress=bar, stop=stop)
    finally:
        await registry.close()
    if found.undecodable:
        err.print(f"skipped {found.undecodable} records that are no task event")
    return list(found.histories.values()), found.interrupted


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return escape(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def _print_report(report: Report) -> None:
    if report.outcome == "passed":
        return
    if report.error is not None:
        err.print(f"[bold red]task {escape(report.task_id)}: cannot re-execute:[/] {escape(report.error)}")
        return
    divergence = report.divergence
    assert divergence is not None
    console.print(
        f"[bold red]task {escape(report.task_id)} diverges at event {divergence.sequence}[/] "
        f"(decision from event {divergence.decision_sequence}, command {divergence.command_type}): "
        f"{escape(divergence.summary)}"
    )
    for difference in divergence.differences:
        console.print(f"  {escape(difference.path)}: recorded {_value(difference.recorded)}")
        console.print(f"  {' ' * len(difference.path)}  today    {_value(difference.today)}")
    if divergence.recorded is not None and not divergence.differences:
        console.print(f"  recorded: {divergence.recorded.event_type} {_value(divergence.recorded.fields)}")
    if divergence.today is not None and not divergence.differences:
        console.print(f"  today:    {divergence.today.event_type} {_value(divergence.today.fields)}")
    console.print(f"  command: {_value(divergence.command)}")


def _finish(summary: Summary, as_json: bool) -> None:
    if as_json:
        body = {
            "passed": summary.passed,
            "interrupted": summary.interrupted,
            "tasks": summary.tasks,
            "failed": len(summary.failed),
            **summary.model_dump(mode="json"),
        }
        console.print_json(json.dumps(body))
    else:
        for report in summary.failed:
            _print_report(report)
        events = sum(report.events for report in summary.reports)
        decisions = sum(report.decisions for report in summary.reports)
        colour = "green" if summary.passed else "red"
        console.print(
            f"[{colour}]{summary.tasks - len(summary.failed)}/{summary.tasks} tasks re-executed without "
            f"divergence[/] ({events} events, {decisions} decisions)"
            + (" [yellow]— interrupted, partial report[/]" if summary.interrupted else "")
        )
    if not summary.passed:
        raise typer.Exit(1)
    if summary.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


def reexecute(
    task_id: Annotated[str | None, typer.Argument(help="The task to re-execute (read from Kafka).")] = None,
    all_tasks: Annotated[bool, typer.Option("--all", help="Every task on the log.")] = False,
    since: Annotated[
        datetime | None, typer.Option(help="With --all: only tasks submitted at or after this time (UTC).")
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option("--corpus", help="A directory of recorded histories (*.jsonl), not Kafka.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run today's decider over recorded histories and report the first event it would decide differently.

    Feeds the recorded model answers, tool outputs, verdicts and decisions instead of calling
    anything. Exit 0: no divergence; 1: a divergence (or a history that cannot be re-executed);
    2: usage error; 130: interrupted before the end (the partial report is printed).
    """
    sources = [task_id is not None, all_tasks, corpus is not None]
    if sum(sources) != 1:
        raise _usage("give exactly one of TASK_ID, --all or --corpus DIR")
    if since is not None and not all_tasks:
        raise _usage("--since goes with --all")
    if since is not None and since.tzinfo is None:
        from datetime import UTC

        since = since.replace(tzinfo=UTC)
    stop = _Interrupt()
    with stop.installed():
        interrupted = False
        if corpus is not None:
            histories = _corpus_histories(corpus)
        elif task_id is not None:
            from streams.history import TaskNotFoundError

            try:
                histories = [asyncio.run(_one_from_log(task_id))]
            except TaskNotFoundError as exc:
                raise _usage(str(exc)) from exc
        else:
            with ProgressBar("reading the log", unit="records", quiet=as_json, transient=True) as bar:
                histories, interrupted = asyncio.run(_all_from_log(since, bar, stop))
        total = sum(len(events) for events in histories)
        with ProgressBar("re-executing", unit="events", quiet=as_json, transient=True) as bar:
            done = 0

            def advance(events: int) -> None:
                nonlocal done
                done += events
                bar(done, total)

            summary = reexecute_all(histories, progress=advance, stop=stop)
    summary.interrupted = summary.interrupted or interrupted
    _finish(summary, as_json)
