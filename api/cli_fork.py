"""``agentlog fork`` and ``agentlog compare``: branch a task at an event, and two runs side by side.

``fork`` goes through the REST API (an operator's key, like ``submit``): the API checks the fork
against the source's history and the processor makes it. ``compare`` reads both histories from
Kafka, like ``replay``. See docs/audit.md.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from api.cli_common import ENDED, console, fail, read_argument, wait_for_task
from audit.compare import Comparison, compare
from streams.settings import Settings, get_settings


def _pairs(values: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        field, sep, setting = value.partition("=")
        if not sep or not field:
            raise fail(f"--set {value!r}: expected field=value")
        pairs[field.strip()] = setting.strip()
    return pairs


def fork(
    task_id: Annotated[str, typer.Argument(help="The task to fork.")],
    at: Annotated[int, typer.Option("--at", help="How many of its events the fork copies (N >= 1).")],
    settings_: Annotated[
        list[str] | None,
        typer.Option("--set", help="field=value: max_steps, max_attempts, max_parallel, token_budget, tier."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model for the fork's later LLM calls.")] = None,
    input_: Annotated[
        str | None,
        typer.Option(
            "--input", help="New input (text, @file or @-): the query, or a message for the pending call."
        ),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the fork ends.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    api_key: Annotated[
        str, typer.Option(envvar="AGENTLOG_API_KEY", help="An operator's API key (agentlog keys create).")
    ] = "",
) -> None:
    """Start a new task from the first N events of TASK_ID (copied, linked to the source) that
    continues live with the changes; prints the fork's id (and, waiting, its result)."""
    settings = get_settings()
    if not api_key:
        raise fail("an API key is needed: --api-key or AGENTLOG_API_KEY (create one: agentlog keys create)")
    body: dict[str, Any] = {"at": at, "set": _pairs(settings_ or [])}
    if model is not None:
        body["model"] = model
    if input_ is not None:
        body["input"] = read_argument(input_)
    base = f"http://{settings.api_host}:{settings.api_port}"
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base, timeout=30, headers=headers) as client:
        response = client.post(f"/v1/tasks/{task_id}/fork", json=body)
        if response.status_code != 202:
            detail = response.json().get("detail") if response.content else None
            raise fail(f"fork refused ({response.status_code}): {detail or response.text}")
        accepted = response.json()
        fork_id = accepted["task_id"]
        view = wait_for_task(client, fork_id, timeout) if wait else None
    if as_json:
        console.print_json(json.dumps({**accepted, "view": view}))
    else:
        console.print(f"fork {fork_id} of {task_id} at {at}: {view['status'] if view else 'requested'}")
        if view and view.get("result"):
            console.print(escape(view["result"]))
        console.print(f"compare: agentlog compare {task_id} {fork_id}")
    if wait and (view is None or view["status"] not in ENDED):
        raise typer.Exit(1)


async def _compare(settings: Settings, a: str, b: str) -> Comparison:
    from schemas.codec import EventCodec
    from schemas.registry.client import RegistryClient
    from streams.history import read_task_events

    registry = RegistryClient(settings.schema_registry_url)
    try:
        codec = EventCodec(registry)
        return compare(await read_task_events(settings, codec, a), await read_task_events(settings, codec, b))
    finally:
        await registry.close()


def _print(comparison: Comparison) -> None:
    summary = Table(title=comparison.branch)
    summary.add_column("")
    a, b = comparison.a, comparison.b
    summary.add_column(f"A {a.task_id}", overflow="fold")
    summary.add_column(f"B {b.task_id}", overflow="fold")
    for label, left, right in (
        ("status", a.status, b.status),
        ("events", a.events, b.events),
        ("steps", a.steps, b.steps),
        ("llm calls", a.llm_calls, b.llm_calls),
        ("tool calls", a.tool_calls, b.tool_calls),
        ("tokens", a.total_tokens, b.total_tokens),
        ("cost usd", f"{a.cost_usd:.6f}", f"{b.cost_usd:.6f}"),
        ("models", ", ".join(a.models), ", ".join(b.models)),
        ("output", a.result or a.error or "", b.result or b.error or ""),
    ):
        summary.add_row(label, escape(str(left)), escape(str(right)))
    console.print(summary)
    rows = Table(title=f"first difference at sequence {comparison.first_difference}")
    for column in ("seq", "", "A event", "A detail", "B event", "B detail"):
        rows.add_column(column, overflow="fold")
    for row in comparison.rows:
        marker = (
            "=" if row.same else ("[bold yellow]>[/]" if row.sequence == comparison.first_difference else "≠")
        )
        rows.add_row(
            str(row.sequence),
            marker,
            row.a_type or "",
            escape(row.a_detail or ""),
            row.b_type or "",
            escape(row.b_detail or ""),
        )
    console.print(rows)


def compare_tasks(
    task_a: Annotated[str, typer.Argument(help="A task id (e.g. the source).")],
    task_b: Annotated[str, typer.Argument(help="Another task id (e.g. its fork).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Two runs side by side from the log: steps, outputs, tokens, cost, and where they first differ."""
    from streams.history import TaskNotFoundError

    try:
        comparison = asyncio.run(_compare(get_settings(), task_a, task_b))
    except TaskNotFoundError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        console.print_json(comparison.model_dump_json())
    else:
        _print(comparison)
