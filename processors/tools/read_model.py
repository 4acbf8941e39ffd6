"""The ``read_model`` tool: a read-only look at the calling task's own rows in the read model.

The model never writes SQL. It picks a view and a few filters, which :func:`build_query` maps to
one parameterised statement whose ``WHERE`` always pins the task id and org id of the call's
context. The statement runs in a READ ONLY transaction under a statement timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from processors.tools.contract import QueryLimits, Tool, ToolContext, ToolError, ToolOutput

TASK_COLUMNS = (
    "task_id",
    "status",
    "query",
    "result",
    "error",
    "steps",
    "llm_calls",
    "tool_calls",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "submitted_at",
    "completed_at",
    "duration_ms",
)
EVENT_COLUMNS = ("sequence", "event_type", "occurred_at", "payload")
# Copies of the conversation the model already holds: large, and not news to it.
OMITTED_PAYLOAD_FIELDS = frozenset({"messages_json", "response_json"})
CONNECT_TIMEOUT_SECONDS = 5


class ReadModelUnavailable(ToolError):
    """The read model cannot be reached (no DSN configured, or the database refused)."""


class ReadModelTimeout(ToolError):
    """The query ran past its statement timeout."""


@dataclass(frozen=True)
class Query:
    """One parameterised statement."""

    statement: sql.Composed
    params: dict[str, Any]


def build_query(arguments: dict[str, Any], *, task_id: str, org_id: str, max_rows: int) -> Query:
    """The statement for validated ``arguments``, scoped to ``task_id`` in ``org_id``."""
    params: dict[str, Any] = {"task_id": task_id, "org_id": org_id}
    if arguments["view"] == "task":
        statement = sql.SQL(
            "SELECT {columns} FROM task_executions WHERE task_id = %(task_id)s AND org_id = %(org_id)s"
        )
        return Query(statement.format(columns=sql.SQL(", ").join(map(sql.Identifier, TASK_COLUMNS))), params)
    conditions = [sql.SQL("task_id = %(task_id)s"), sql.SQL("org_id = %(org_id)s")]
    if event_types := arguments.get("event_types"):
        conditions.append(sql.SQL("event_type = ANY(%(event_types)s)"))
        params["event_types"] = list(event_types)
    if "after_sequence" in arguments:
        conditions.append(sql.SQL("sequence > %(after_sequence)s"))
        params["after_sequence"] = arguments["after_sequence"]
    params["limit"] = min(arguments.get("limit", 20), max_rows)
    direction = sql.SQL("DESC" if arguments.get("order") == "desc" else "ASC")
    statement = sql.SQL(
        "SELECT {columns} FROM task_events WHERE {where} ORDER BY sequence {direction} LIMIT %(limit)s"
    )
    return Query(
        statement.format(
            columns=sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMNS)),
            where=sql.SQL(" AND ").join(conditions),
            direction=direction,
        ),
        params,
    )


async def run_read_only(
    dsn: str, statement: sql.SQL | sql.Composed, params: dict[str, Any], limits: QueryLimits
) -> list[dict[str, Any]]:
    """Rows of one statement in a READ ONLY transaction with a statement timeout."""
    try:
        async with await psycopg.AsyncConnection.connect(
            dsn,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            options=f"-c statement_timeout={limits.statement_timeout_ms} -c default_transaction_read_only=on",
        ) as conn:
            await conn.set_read_only(True)
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.execute(statement, params)
                return await cursor.fetchall()
    except psycopg.errors.QueryCanceled as exc:
        raise ReadModelTimeout(
            f"the query ran past the {limits.statement_timeout_ms} ms statement timeout"
        ) from exc
    except psycopg.OperationalError as exc:
        raise ReadModelUnavailable(f"the read model cannot be reached: {exc}") from exc


def render(view: str, rows: list[dict[str, Any]]) -> str:
    """Rows as the model reads them: JSON, conversation copies left out of event payloads."""
    if view == "task":
        body: Any = rows[0] if rows else None
    else:
        body = [
            {
                **row,
                "payload": {
                    k: v for k, v in (row["payload"] or {}).items() if k not in OMITTED_PAYLOAD_FIELDS
                },
            }
            for row in rows
        ]
    return orjson.dumps(body, default=_json_default, option=orjson.OPT_INDENT_2).decode()


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


async def _read_model(arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
    dsn = context.settings.postgres_dsn
    if not dsn:
        raise ReadModelUnavailable("no read-model database is configured (ToolSettings.postgres_dsn)")
    limits = context.limits.query
    query = build_query(arguments, task_id=context.task_id, org_id=context.org_id, max_rows=limits.max_rows)
    rows = await run_read_only(dsn, query.statement, query.params, limits)
    return ToolOutput(text=render(arguments["view"], rows))


TOOL = Tool(
    name="read_model",
    description=(
        "Read this task's own records: view 'task' (status, counts, tokens, result) or view 'events' "
        "(its event log: sequence, type, time, payload), optionally filtered by event type and "
        "sequence, newest or oldest first."
    ),
    parameters={
        "type": "object",
        "properties": {
            "view": {"enum": ["task", "events"]},
            "event_types": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[A-Za-z]{1,64}$"},
                "maxItems": 20,
                "description": "Only these event types, e.g. ['ToolCallCompleted']",
            },
            "after_sequence": {"type": "integer", "minimum": -1, "description": "Only events after this one"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
            "order": {"enum": ["asc", "desc"], "default": "asc"},
        },
        "required": ["view"],
        "additionalProperties": False,
    },
    invoke=_read_model,
)
