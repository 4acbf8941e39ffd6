"""``agentlog verify``, ``seal``, ``export`` and ``import``: tamper evidence and moving task
histories between deployments (docs/audit.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from api.cli_common import ProgressBar, err, fail
from streams.settings import Settings, get_settings

_T = TypeVar("_T")
_INTERRUPTED = 130  # the shell's code for a command ended by SIGINT

PrefixOption = Annotated[
    str | None,
    typer.Option("--topic-prefix", help="The deployment's topic prefix (default: AGENTLOG_TOPIC_PREFIX)."),
]
BootstrapOption = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap servers (default: AGENTLOG_KAFKA_BOOTSTRAP)."),
]
RegistryOption = Annotated[
    str | None, typer.Option("--registry-url", help="Schema registry URL (default: the platform's).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON (no progress bar).")]


def _settings(prefix: str | None, bootstrap: str | None, registry_url: str | None) -> Settings:
    update: dict[str, str] = {}
    if prefix:
        update["topic_prefix"] = prefix
    if bootstrap:
        update["kafka_bootstrap"] = bootstrap
    if registry_url:
        update["registry_url"] = registry_url
    return get_settings().model_copy(update=update)


def _run(settings: Settings, work: Callable[..., Awaitable[_T]]) -> _T:
    """Run ``work(codec)`` with a registry client of ``settings``; closed however it ends."""
    from schemas.codec import EventCodec
    from schemas.registry.client import RegistryClient

    async def main() -> _T:
        registry = RegistryClient(settings.schema_registry_url)
        try:
            return await work(EventCodec(registry))
        finally:
            await registry.close()

    return asyncio.run(main())


def _known_errors() -> tuple[type[BaseException], ...]:
    from aiokafka.errors import KafkaError

    from audit.export import ExportFileError
    from audit.import_ import ImportConflictError
    from audit.log import TopicMissingError
    from schemas.registry.client import RegistryRejected, RegistryUnavailable
    from streams.history import TaskNotFoundError

    return (
        ExportFileError,
        ImportConflictError,
        TopicMissingError,
        TaskNotFoundError,
        RegistryRejected,
        RegistryUnavailable,
        KafkaError,
    )


def verify(
    task_id: Annotated[str | None, typer.Argument(help="The task to verify (or --all).")] = None,
    all_tasks: Annotated[
        bool, typer.Option("--all", help="Every task on the log, and every sealed day's Merkle root.")
    ] = False,
    topic_prefix: PrefixOption = None,
    bootstrap: BootstrapOption = None,
    registry_url: RegistryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check hash chains and sequences (and sealed roots with --all); report each first broken link.

    Exit 1 if anything is broken.
    """
    from audit.verify_log import verify_log

    if (task_id is None) == (not all_tasks):
        raise fail("give a TASK_ID or --all")
    settings = _settings(topic_prefix, bootstrap, registry_url)
    try:
        with ProgressBar("verify", quiet=as_json) as progress:
            report = _run(
                settings, lambda codec: verify_log(settings, codec, task_id=task_id, on_progress=progress)
            )
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: nothing was verified (verify only reads)")
        raise typer.Exit(_INTERRUPTED) from None
    except _known_errors() as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from exc
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        broken = [t for t in report.tasks if not t.ok]
        if broken:
            table = Table(title=f"{len(broken)} task(s) with a broken chain")
            for column in ("task", "sequence", "kind", "expected", "found", "where"):
                table.add_column(column, overflow="fold")
            for verdict in broken:
                b = verdict.first_break
                assert b is not None
                table.add_row(
                    escape(b.task_id),
                    str(b.sequence),
                    b.kind,
                    escape(str(b.expected)),
                    escape(str(b.found)),
                    b.position or "",
                )
            Console().print(table)
            for verdict in broken:
                if verdict.first_break is not None:
                    err.print(f"{escape(verdict.task_id)}: {escape(verdict.first_break.detail)}")
        bad_seals = [s for s in report.seals if not s.ok]
        for seal in bad_seals:
            err.print(
                f"[bold red]seal mismatch[/] {escape(seal.org_id)} {seal.day}: sealed"
                f" {seal.sealed_events} events root {seal.sealed_root}; the log now gives"
                f" {seal.found_events} events root {seal.found_root}"
                + (f" ({escape(seal.detail)})" if seal.detail else "")
            )
        if report.undecodable_records:
            err.print(f"[yellow]{report.undecodable_records} record(s) on the task topics did not decode[/]")
        events = sum(t.events for t in report.tasks)
        colour = "green" if report.ok else "red"
        err.print(
            f"[{colour}]{len(report.tasks) - len(broken)}/{len(report.tasks)} task(s) intact[/]"
            f" ({events:,} events)"
            + (
                f", {len(report.seals) - len(bad_seals)}/{len(report.seals)} sealed day(s) match"
                if all_tasks
                else ""
            )
        )
    if not report.ok:
        raise typer.Exit(1)


def seal(
    day: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], help="The UTC day to seal (default: the last day the auditor may seal)."
        ),
    ] = None,
    org: Annotated[
        str | None, typer.Option(help="Only this org (default: every org with events that day).")
    ] = None,
    topic_prefix: PrefixOption = None,
    bootstrap: BootstrapOption = None,
    registry_url: RegistryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record the Merkle root of each org's events of a UTC day (AuditSealed) on the audit topic.

    A day sealed already with the same root is left as it is; a different root is reported (exit 1).
    """
    from audit.seal import due_day, seal_day

    settings = _settings(topic_prefix, bootstrap, registry_url)
    wanted: date = day.date() if day is not None else due_day(datetime.now(UTC))
    if wanted >= datetime.now(UTC).date():
        err.print(f"[yellow]{wanted} has not ended: events of it written later are not in this seal[/]")
    try:
        with ProgressBar(f"seal {wanted}", quiet=as_json) as progress:
            result = _run(
                settings,
                lambda codec: seal_day(
                    settings, codec, wanted, org=org, sealed_by="/agentlog/cli", on_progress=progress
                ),
            )
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: nothing sealed (a seal is written only once its day is read)")
        raise typer.Exit(_INTERRUPTED) from None
    except _known_errors() as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from exc
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
    else:
        for s in result.written:
            err.print(
                f"[green]sealed[/] {escape(s.org_id)} {s.day}: {s.events:,} events of {s.tasks:,}"
                f" task(s), root {s.root}"
            )
        for s in result.unchanged:
            err.print(f"already sealed {escape(s.org_id)} {s.day}: root {s.root}")
        for old, new in result.conflicts:
            err.print(
                f"[bold red]conflict[/] {escape(old.org_id)} {old.day}: sealed root {old.root}"
                f" ({old.events} events), the log now gives {new.root} ({new.events} events)"
            )
        if not (result.written or result.unchanged or result.conflicts):
            err.print(f"no events on {wanted}")
    if result.conflicts:
        raise typer.Exit(1)


def export(
    task_id: Annotated[str | None, typer.Argument(help="The task to export (or --org).")] = None,
    org: Annotated[str | None, typer.Option(help="Every event of this org's tasks (with --since).")] = None,
    since: Annotated[
        datetime | None,
        typer.Option(help="With --org: records written at or after this time (UTC if naive)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="avro (object container file) or jsonl.")] = "avro",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The file (default: <task or org>.<format>).")
    ] = None,
    topic_prefix: PrefixOption = None,
    bootstrap: BootstrapOption = None,
    registry_url: RegistryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a task's (or an org's) events, with their exact bytes, to an Avro or JSON-lines file."""
    from audit.export import ExportFormat, export_to_file
    from audit.log import ReadStats, read_events

    if (task_id is None) == (org is None):
        raise fail("give a TASK_ID or --org")
    try:
        export_format = ExportFormat(fmt)
    except ValueError:
        raise fail(f"--format {fmt!r}: choose avro or jsonl") from None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    settings = _settings(topic_prefix, bootstrap, registry_url)
    path = output or Path(f"{task_id or org}.{export_format.value}")
    scope = {
        "topic_prefix": settings.topic_prefix,
        "task_id": task_id,
        "org": org,
        "since": since.isoformat() if since else None,
    }
    stats = ReadStats()
    try:
        with ProgressBar(f"export {task_id or org}", quiet=as_json) as progress:
            count = _run(
                settings,
                lambda codec: export_to_file(
                    read_events(
                        settings,
                        codec,
                        task_id=task_id,
                        org=org,
                        since=since,
                        stats=stats,
                        on_progress=progress,
                    ),
                    path,
                    export_format,
                    scope,
                ),
            )
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: no export written ({escape(str(path))}.partial removed)")
        raise typer.Exit(_INTERRUPTED) from None
    except _known_errors() as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from exc
    if task_id is not None and count == 0:
        path.unlink(missing_ok=True)
        raise fail(f"no events of task {task_id} on the log")
    summary = {
        "path": str(path),
        "format": export_format.value,
        "events": count,
        "undecodable": stats.undecodable,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        err.print(f"[green]exported[/] {count:,} events to {escape(str(path))}")
        for line in stats.undecodable:
            err.print(f"[yellow]not exported (did not decode)[/]: {escape(line)}")


def import_(
    path: Annotated[
        Path, typer.Argument(help="An export file (avro or jsonl).", exists=True, dir_okay=False)
    ],
    topic_prefix: PrefixOption = None,
    bootstrap: BootstrapOption = None,
    registry_url: RegistryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Produce an export's events, unchanged, to a deployment's topics; events already there are skipped."""
    from audit.export import read_export
    from audit.import_ import ImportResult, import_events

    settings = _settings(topic_prefix, bootstrap, registry_url)
    try:
        exported = list(read_export(path))
        with ProgressBar(f"import into {settings.topic_prefix}", quiet=as_json) as progress:
            result: ImportResult = _run(
                settings, lambda codec: import_events(settings, codec, exported, on_progress=progress)
            )
    except KeyboardInterrupt:
        err.print(
            "[yellow]interrupted[/]: what was acknowledged is on the target; run the same import again"
            " to finish it (events already there are skipped)"
        )
        raise typer.Exit(_INTERRUPTED) from None
    except _known_errors() as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from exc
    if as_json:
        typer.echo(json.dumps(result.__dict__, indent=2))
    else:
        err.print(
            f"[green]imported[/] {result.produced:,} of {result.events:,} events"
            f" ({result.skipped:,} already there) of {len(result.tasks):,} task(s)"
            f" into {escape(settings.topic_prefix)}"
        )
