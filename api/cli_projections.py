"""``agentlog rebuild`` and ``agentlog reconcile``: the read models against the log (docs/projections.md)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from api.cli_common import ProgressBar, err, fail
from streams.settings import get_settings

if TYPE_CHECKING:
    from audit.effects import EffectDifference

# Plain progress lines when stderr is not a terminal (CI logs, files): one every this many seconds.
_LINE_INTERVAL_S = 5.0
_SHOWN_DIFFERENCES = 50


class RebuildTarget(StrEnum):
    postgres = "postgres"
    elasticsearch = "elasticsearch"


def rebuild(
    target: Annotated[RebuildTarget, typer.Argument(help="The read model to rebuild.")],
    from_offset: Annotated[
        int | None,
        typer.Option(help="Elasticsearch only: re-index in place from this offset of every partition."),
    ] = None,
    from_time: Annotated[
        datetime | None,
        typer.Option(help="Elasticsearch only: re-index in place from the first record at/after this time."),
    ] = None,
    drop_old: Annotated[
        bool, typer.Option("--drop-old", help="Delete the replaced schema / indices after the swap.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON (no progress bar).")
    ] = False,
) -> None:
    """Rebuild a read model from the log (offset 0) beside the live one, then swap it in atomically."""
    from projections.rebuild import RebuildError
    from projections.rebuild import rebuild as run_rebuild

    if from_offset is not None and from_time is not None:
        raise fail("give --from-offset or --from-time, not both")
    settings = get_settings()
    try:
        with ProgressBar(f"rebuild {target.value}", quiet=as_json) as progress:
            result = asyncio.run(
                run_rebuild(
                    target.value,
                    settings,
                    drop_old=drop_old,
                    from_offset=from_offset,
                    from_time=from_time,
                    on_progress=progress,
                )
            )
    except RebuildError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    err.print(
        f"[green]rebuilt {result.target}[/] ({result.mode}): {result.events:,} events from "
        f"{result.records:,} records in {result.seconds:,.1f}s ({result.events_per_s:,.0f} events/s)"
    )
    err.print(f"serving: {escape(', '.join(result.serving))}")
    if result.archived:
        err.print(
            f"archived (drop with --drop-old next time, or by hand): {escape(', '.join(result.archived))}"
        )
    if result.dropped:
        err.print(f"dropped: {escape(', '.join(result.dropped))}")


def _effect_calls(paths: list[Path]) -> dict[str, int]:
    """The call counts per idempotency key of every ``--effects`` file, summed over the files."""
    calls: dict[str, int] = {}
    for path in paths:
        try:
            counts = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise fail(f"--effects {path}: {exc}") from exc
        if not isinstance(counts, dict) or not all(
            isinstance(key, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0
            for key, n in counts.items()
        ):
            raise fail(f'--effects {path}: expected a JSON object of call counts, {{"KEY": N, ...}}')
        for key, n in counts.items():
            calls[key] = calls.get(key, 0) + n
    return calls


def reconcile(
    org: Annotated[str | None, typer.Option(help="Only this org's tasks.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    effects: Annotated[
        list[Path] | None,
        typer.Option(
            "--effects",
            help='A provider\'s call counts per idempotency key, JSON {"KEY": N}: check every recorded LLM'
            " and http_fetch call against them (repeat for several providers: the counts are summed).",
        ),
    ] = None,
    in_flight: Annotated[
        list[str] | None,
        typer.Option(
            "--in-flight", help="A key whose call was under way at a crash: one more call is allowed."
        ),
    ] = None,
    counted: Annotated[
        list[str] | None,
        typer.Option(
            "--counted",
            help="The effects the --effects counts cover: llm and/or tool names (default: llm, http_fetch).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Compare the log with Postgres and Elasticsearch per task, check each task's log, and, with
    --effects, each LLM and tool call against a provider's counts; exit 1 on any difference."""
    from audit.effects import COUNTED_KINDS
    from projections.reconcile import reconcile as run_reconcile

    calls = _effect_calls(effects) if effects else None
    report = asyncio.run(
        run_reconcile(
            get_settings(),
            org=org,
            task=task,
            effect_calls=calls,
            in_flight=frozenset(in_flight or ()),
            counted_effects=frozenset(counted) if counted else COUNTED_KINDS,
        )
    )
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        totals = Table(title="reconcile: totals")
        for column in ("source", "tasks", "events"):
            totals.add_column(column, justify="left" if column == "source" else "right")
        for source, total in report.totals.items():
            totals.add_row(source, f"{total.tasks:,}", f"{total.events:,}")
        Console().print(totals)
        if report.undecodable_records:
            err.print(f"[yellow]{report.undecodable_records} log record(s) did not decode[/]")
        if report.differences:
            table = Table(title=f"{len(report.differences)} difference(s) from the log")
            table.add_column("task", overflow="fold")
            for column in ("source", "kind", "log", "found"):
                table.add_column(column)
            for d in report.differences[:_SHOWN_DIFFERENCES]:
                table.add_row(escape(d.task_id), d.source, d.kind, escape(str(d.log)), escape(str(d.found)))
            Console().print(table)
            if len(report.differences) > _SHOWN_DIFFERENCES:
                err.print(f"... and {len(report.differences) - _SHOWN_DIFFERENCES} more (--json lists all)")
        else:
            err.print("[green]no differences[/]")
        if report.effects_checked is not None:
            _print_effects(report.effects_checked, report.effect_differences)
    if not report.ok:
        raise typer.Exit(1)


def _print_effects(checked: int, differences: list[EffectDifference]) -> None:
    if not differences:
        err.print(f"[green]effects: {checked:,} recorded call(s), each made as the log allows[/]")
        return
    table = Table(title=f"{len(differences)} effect difference(s) in {checked:,} recorded call(s)")
    table.add_column("key", overflow="fold")
    for column in ("effect", "kind", "allowed", "calls"):
        table.add_column(column)
    for d in differences[:_SHOWN_DIFFERENCES]:
        table.add_row(escape(d.key), escape(d.effect), d.kind, d.allowed, str(d.calls))
    Console().print(table)
    if len(differences) > _SHOWN_DIFFERENCES:
        err.print(f"... and {len(differences) - _SHOWN_DIFFERENCES} more (--json lists all)")
