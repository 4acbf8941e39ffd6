"""The read_model tool against the real Postgres read model, on rows inserted under unique task ids."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from processors.tools.contract import QueryLimits, ToolContext, ToolLimits, ToolSettings
from processors.tools.execute import ToolOutcome, execute
from processors.tools.read_model import ReadModelTimeout, run_read_only
from processors.tools.registry import build_registry
from streams.settings import Settings

REGISTRY = build_registry(plugins=[])
EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("TaskAccepted", {"max_steps": 8}),
    ("LlmCallRequested", {"step": 1, "messages_json": '[{"role": "system", "content": "..."}]'}),
    ("ToolCallRequested", {"tool": "calculator", "arguments_json": '{"expression": "2+2"}'}),
    ("ToolCallCompleted", {"tool": "calculator", "output": "4"}),
    ("TaskCompleted", {"result": "4"}),
]


def _insert_task(conn: psycopg.Connection[Any], task_id: str, org_id: str, result: str) -> None:
    now = datetime.now(UTC)
    conn.execute(
        "INSERT INTO task_executions (task_id, org_id, user_id, status, status_sequence, result, steps,"
        " last_sequence, event_count, updated_at) VALUES (%s, %s, 'alice', 'completed', 4, %s, 1, 4, 5, %s)",
        (task_id, org_id, result, now),
    )
    for sequence, (event_type, payload) in enumerate(EVENTS):
        conn.execute(
            "INSERT INTO task_events (task_id, sequence, event_id, event_type, org_id, occurred_at, producer,"
            " digest, payload, topic, kafka_partition, kafka_offset)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'test', 'digest', %s, 'test-topic', 0, %s)",
            (
                task_id,
                sequence,
                uuid.uuid4(),
                event_type,
                org_id,
                now,
                Jsonb({**payload, "task": task_id}),
                sequence,
            ),
        )


@pytest.fixture
def tasks(stack: Settings) -> Iterator[tuple[str, str]]:
    """Two tasks' rows: ours in org acme, and another task's (same org) that must stay invisible."""
    ours, theirs = f"rm-test-{uuid.uuid4()}", f"rm-test-{uuid.uuid4()}"
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        _insert_task(conn, ours, "acme", "ours")
        _insert_task(conn, theirs, "acme", "theirs")
    yield ours, theirs
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        for table in ("task_events", "task_executions"):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE task_id = ANY(%s)").format(sql.Identifier(table)),
                ([ours, theirs],),
            )


def _context(stack: Settings, task_id: str, org_id: str, tmp_path: Path) -> ToolContext:
    return ToolContext(
        task_id=task_id,
        org_id=org_id,
        user_id="alice",
        workspace=tmp_path,
        limits=ToolLimits(query=QueryLimits(statement_timeout_ms=500, max_rows=3)),
        settings=ToolSettings(postgres_dsn=stack.postgres_dsn),
    )


async def _query(context: ToolContext, **arguments: Any) -> ToolOutcome:
    return await execute("read_model", json.dumps(arguments), context, registry=REGISTRY)


async def test_the_task_view_is_the_calling_tasks_row(
    stack: Settings, tasks: tuple[str, str], tmp_path: Path
) -> None:
    ours, _ = tasks
    outcome = await _query(_context(stack, ours, "acme", tmp_path), view="task")
    assert outcome.error_type is None, outcome.error
    row = json.loads(outcome.output)
    assert (row["task_id"], row["status"], row["result"], row["steps"]) == (ours, "completed", "ours", 1)


async def test_events_are_only_the_calling_tasks_filtered_and_capped(
    stack: Settings, tasks: tuple[str, str], tmp_path: Path
) -> None:
    ours, _ = tasks
    context = _context(stack, ours, "acme", tmp_path)
    events = json.loads((await _query(context, view="events", limit=100)).output)
    assert [event["sequence"] for event in events] == [0, 1, 2]  # max_rows caps the model's limit
    assert {event["payload"]["task"] for event in events} == {ours}
    assert "messages_json" not in events[1]["payload"]
    newest = json.loads((await _query(context, view="events", order="desc", limit=2)).output)
    assert [event["event_type"] for event in newest] == ["TaskCompleted", "ToolCallCompleted"]
    tools = json.loads(
        (await _query(context, view="events", event_types=["ToolCallRequested", "ToolCallCompleted"])).output
    )
    assert [event["sequence"] for event in tools] == [2, 3]
    after = json.loads((await _query(context, view="events", after_sequence=3)).output)
    assert [event["event_type"] for event in after] == ["TaskCompleted"]


async def test_another_org_sees_nothing_of_the_task(
    stack: Settings, tasks: tuple[str, str], tmp_path: Path
) -> None:
    ours, _ = tasks
    context = _context(stack, ours, "globex", tmp_path)
    assert (await _query(context, view="task")).output == "null"
    assert (await _query(context, view="events")).output == "[]"


async def test_raw_sql_is_refused_before_reaching_the_database(
    stack: Settings, tasks: tuple[str, str], tmp_path: Path
) -> None:
    ours, theirs = tasks
    context = _context(stack, ours, "acme", tmp_path)
    outcome = await _query(context, view="events", sql=f"DELETE FROM task_events WHERE task_id = '{theirs}'")
    assert outcome.error_type == "ToolArgumentsError" and "'sql' was unexpected" in (outcome.error or "")
    outcome = await _query(context, view="events", event_types=["x' OR task_id <> '"])
    assert outcome.error_type == "ToolArgumentsError" and "rule 'pattern'" in (outcome.error or "")
    rows = await run_read_only(
        stack.postgres_dsn,
        sql.SQL("SELECT count(*) AS n FROM task_events WHERE task_id = %(t)s"),
        {"t": theirs},
        QueryLimits(),
    )
    assert rows == [{"n": len(EVENTS)}]


async def test_the_transaction_is_read_only(stack: Settings, tasks: tuple[str, str]) -> None:
    ours, _ = tasks
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        await run_read_only(
            stack.postgres_dsn,
            sql.SQL("DELETE FROM task_events WHERE task_id = %(t)s"),
            {"t": ours},
            QueryLimits(),
        )
    rows = await run_read_only(
        stack.postgres_dsn,
        sql.SQL("SELECT count(*) AS n FROM task_events WHERE task_id = %(t)s"),
        {"t": ours},
        QueryLimits(),
    )
    assert rows == [{"n": len(EVENTS)}]


async def test_a_slow_statement_is_cancelled_at_the_timeout(stack: Settings) -> None:
    with pytest.raises(ReadModelTimeout, match="200 ms statement timeout"):
        await run_read_only(
            stack.postgres_dsn, sql.SQL("SELECT pg_sleep(5)"), {}, QueryLimits(statement_timeout_ms=200)
        )


async def test_an_unreachable_database_is_an_outcome(tmp_path: Path) -> None:
    context = ToolContext(
        task_id="t",
        org_id="acme",
        user_id="alice",
        workspace=tmp_path,
        settings=ToolSettings(postgres_dsn="postgresql://nobody@127.0.0.1:1/none"),
    )
    outcome = await _query(context, view="task")
    assert outcome.error_type == "ReadModelUnavailable"
    unconfigured = await _query(context.model_copy(update={"settings": ToolSettings()}), view="task")
    assert unconfigured.error_type == "ReadModelUnavailable" and "postgres_dsn" in (unconfigured.error or "")
