"""``agentlog rebuild`` and ``agentlog reconcile``: the read models against the log (docs/projections.md)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from api.cli_common import ProgressBar, err, fail
from streams.settings import get_settings

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


def reconcile(
    org: Annotated[str | None, typer.Option(help="Only this org's tasks.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Compare the log with Postgres and Elasticsearch per task; exit 1 on any difference."""
    from projections.reconcile import reconcile as run_reconcile

    report = asyncio.run(run_reconcile(get_settings(), org=org, task=task))
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
    if report.differences:
        raise typer.Exit(1)
