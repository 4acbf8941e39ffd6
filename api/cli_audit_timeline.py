"""``agentlog replay``, ``agentlog state`` and ``agentlog diff``: a task's history read back from the
log, as a timeline, as its state at any point, and as what changed between two points (docs/audit.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from api.cli_common import console, err, fail
from streams.settings import Settings, get_settings

if TYPE_CHECKING:
    from audit.timetravel import SubtaskNode, SubtaskTree
    from schemas.events import Event

_DETAIL_WIDTH = 120
_VALUE_WIDTH = 200
_TIMELINE_COLUMNS = (
    "seq", "event", "step", "agent", "model / tool", "tokens", "cost $", "latency ms", "+ms", "detail",
)  # fmt: skip


async def read_events(settings: Settings, task_id: str) -> list[Event]:
    """The task's events read back from the log (both task topics), in sequence order."""
    from schemas.codec import EventCodec
    from schemas.registry.client import RegistryClient
    from streams.history import read_task_events

    registry = RegistryClient(settings.schema_registry_url)
    try:
        return await read_task_events(settings, EventCodec(registry), task_id)
    finally:
        await registry.close()


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C ends the command with one line and exit code 130: these commands only read the log,
    and the consumer is closed on the way out, so stopping midway leaves nothing behind."""
    try:
        yield
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/] (nothing was changed)")
        raise typer.Exit(130) from None


def _history(task_id: str) -> list[Event]:
    """The task's events, with a spinner while the log is scanned (on a terminal)."""
    with _interruptible():
        if err.is_terminal:
            with err.status(f"reading task {escape(task_id)} from the log", spinner="dots"):
                return _read(task_id)
        return _read(task_id)


def _read(task_id: str) -> list[Event]:
    from streams.history import TaskNotFoundError

    try:
        return asyncio.run(read_events(get_settings(), task_id))
    except TaskNotFoundError as exc:
        raise fail(str(exc)) from exc


def _cell(value: Any, spec: str = "") -> str:
    return "" if value is None else format(value, spec)


def print_timeline(rows: list[dict[str, Any]], task_id: str) -> None:
    """The timeline (``api.timeline.timeline_rows``) as a rich table."""
    table = Table(title=f"task {task_id}", show_lines=False)
    columns = (
        "seq",
        "event",
        "step",
        "agent",
        "model / tool",
        "tokens",
        "cost $",
        "latency ms",
        "+ms",
        "detail",
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["sequence"]),
            row["event_type"],
            _cell(row["step"]),
            escape(row["agent"] or ""),
            escape(row["tool"] or row["model"] or ""),
            _cell(row["tokens"]),
            _cell(row["cost_usd"], ".4f"),
            _cell(row["latency_ms"], ".1f"),
            _cell(row["since_previous_ms"], ".0f"),
            escape((row["detail"] or "")[:_DETAIL_WIDTH]),
        )
    console.print(table)


def read_timeline(settings: Settings, task_id: str) -> list[dict[str, Any]]:
    """The task's timeline rows, read back from the log."""
    from api.timeline import timeline_rows

    return timeline_rows(asyncio.run(read_events(settings, task_id)))


_STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "pending": "dim",
    "failed": "red",
    "abandoned": "yellow",
}


def _node_label(node: SubtaskNode) -> str:
    style = _STATUS_STYLE[node.status]
    label = f"[bold]{escape(node.subtask_id)}[/] [{style}]{node.status}[/] {escape(node.description)}"
    if len(node.depends_on) > 1:
        label += f" [dim](after {escape(', '.join(node.depends_on))})[/]"
    outcome = node.result if node.result is not None else node.error
    if outcome:
        label += f" [dim]→ {escape(outcome[:_DETAIL_WIDTH])}[/]"
    return label


def _print_tree(tree: SubtaskTree) -> None:
    root = Tree(f"task {escape(tree.task_id)} [bold]{tree.task_status}[/] ({tree.mode or 'not accepted'})")
    if not tree.subtasks:
        root.add("[dim]no plan: the main agent does all the work[/]")
    nodes = {node.subtask_id: node for node in tree.subtasks}
    shown: set[str] = set()

    def add(parent: Tree, node: SubtaskNode) -> None:
        # A subtask with several dependencies hangs under each; its own dependants only once.
        if node.subtask_id in shown:
            parent.add(f"[bold]{escape(node.subtask_id)}[/] [dim](shown above)[/]")
            return
        shown.add(node.subtask_id)
        branch = parent.add(_node_label(node))
        for dependant in node.dependants:
            add(branch, nodes[dependant])

    for node in tree.roots:
        add(root, node)
    console.print(root)


def replay(
    task_id: Annotated[str, typer.Argument(help="Task id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the timeline (or tree) as JSON.")] = False,
    as_tree: Annotated[
        bool, typer.Option("--tree", help="Show the plan's subtask DAG, each with its status.")
    ] = False,
) -> None:
    """Read a task's events back from Kafka and print its timeline (or its subtask tree)."""
    from api.timeline import timeline_rows
    from audit.timetravel import subtask_tree
    from processors.task.state import HistoryError

    events = _history(task_id)
    if as_tree:
        try:
            tree = subtask_tree(events)
        except HistoryError as exc:
            raise fail(str(exc)) from exc
        if as_json:
            typer.echo(tree.model_dump_json(indent=2))
        else:
            _print_tree(tree)
        return
    rows = timeline_rows(events)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        print_timeline(rows, task_id)


def _parse_time(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise fail(f"--at-time {value!r} is not an ISO 8601 time (e.g. 2026-01-01T12:00:00Z)") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def state(
    task_id: Annotated[str, typer.Argument(help="Task id.")],
    at: Annotated[int | None, typer.Option("--at", help="After this event (sequence number).")] = None,
    at_time: Annotated[
        str | None,
        typer.Option("--at-time", help="As it was at this ISO 8601 time (UTC if no zone is given)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Plain JSON (for scripts).")] = False,
) -> None:
    """The task's state after event N (or at time T): the fold of `evolve` over that prefix."""
    from audit.timetravel import PositionError, sequence_at_time, state_at
    from processors.task.state import HistoryError

    if (at is None) == (at_time is None):
        raise fail("give exactly one of --at N or --at-time T")
    events = _history(task_id)
    try:
        sequence = at if at is not None else sequence_at_time(events, _parse_time(at_time or ""))
        folded = state_at(events, sequence)
    except (PositionError, HistoryError) as exc:
        raise fail(str(exc)) from exc
    event = next(e for e in events if e.sequence == sequence)
    document = {
        "task_id": task_id,
        "sequence": sequence,
        "event_type": event.event_type,
        "occurred_at": event.envelope.occurred_at.isoformat(),
        "state": folded.model_dump(mode="json"),
    }
    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        err.print(
            f"task {escape(task_id)} after event {sequence} ({event.event_type}, "
            f"{event.envelope.occurred_at.isoformat()}): {folded.status.value}"
        )
        console.print_json(json.dumps(document["state"]))


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return escape(text if len(text) <= _VALUE_WIDTH else text[:_VALUE_WIDTH] + "…")


def diff(
    task_id: Annotated[str, typer.Argument(help="Task id.")],
    from_: Annotated[int, typer.Option("--from", help="The earlier point: after this event.")],
    to: Annotated[int, typer.Option("--to", help="The later point: after this event.")],
    as_json: Annotated[bool, typer.Option("--json", help="Plain JSON (for scripts).")] = False,
) -> None:
    """What changed in the task's state between event N and event M (JSON-pointer paths)."""
    from audit.timetravel import PositionError, diff_states, state_at
    from processors.task.state import HistoryError

    if from_ > to:
        raise fail(f"--from {from_} is after --to {to}")
    events = _history(task_id)
    try:
        changes = diff_states(state_at(events, from_), state_at(events, to))
    except (PositionError, HistoryError) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        document = {
            "task_id": task_id,
            "from": from_,
            "to": to,
            "changes": [change.model_dump(mode="json") for change in changes],
        }
        typer.echo(json.dumps(document, indent=2))
        return
    table = Table(title=f"task {escape(task_id)}: event {from_} → {to}, {len(changes)} change(s)")
    for column in ("path", "op", "before", "after"):
        table.add_column(column, overflow="fold")
    for change in changes:
        table.add_row(
            escape(change.path),
            change.op,
            "" if change.op == "add" else _short(change.before),
            "" if change.op == "remove" else _short(change.after),
        )
    console.print(table)
