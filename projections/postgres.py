"""PostgreSQL read models: the writer (``TaskProjector``) and the queries the API serves from.

Exactly-once effect on the rows from at-least-once delivery: each batch is one transaction that
inserts the events (``(task_id, sequence)`` primary key: duplicates are dropped), applies only the
newly inserted ones to the task views and the other read models (LLM calls, tool calls, approvals,
agents, daily usage, sessions), inserts the dead-letter records read in the batch (keyed by their
own position), and stores the next offset of every partition. On (re)assignment the consumer
seeks to those stored offsets.
"""

from __future__ import annotations

import json
import re
import weakref
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from aiokafka import TopicPartition
from psycopg import AsyncConnection, OperationalError
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb, set_json_dumps
from psycopg.types.string import StrDumperUnknown
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from projections.agent_view import AGENT_EXECUTIONS, AgentRow
from projections.approval_view import APPROVALS, ApprovalRow
from projections.dead_letter_view import DeadLetterCursor, DeadLetterEntry, DeadLetterRow, dead_letter_row
from projections.llm_call_view import LLM_CALLS, LlmCallRow
from projections.rows import Key, RowTable, event_keys, fold_rows
from projections.session_view import SessionIncrement, session_increments
from projections.task_view import TaskFilter, TaskView, apply, new_view
from projections.tool_call_view import TOOL_CALLS, ToolCallRow
from projections.usage_view import UsageIncrement, usage_increments
from schemas.events import Event
from streams.consumer import DeadLetter, Decoded
from streams.position import Position

_VIEW_COLUMNS = list(TaskView.model_fields)
_UPSERT_VIEW = (
    f"INSERT INTO task_executions ({', '.join(_VIEW_COLUMNS)}) "
    f"VALUES ({', '.join('%(' + c + ')s' for c in _VIEW_COLUMNS)}) "
    f"ON CONFLICT (task_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _VIEW_COLUMNS if c != "task_id")
)
# One statement per batch (arrays unnested server-side), not one per event: per-statement overhead
# was most of the projection's Postgres CPU. Binary parameters (%b): text-mode array quoting was
# the projector's largest Python cost.
_INSERT_EVENTS = (
    "INSERT INTO task_events (task_id, sequence, event_id, event_type, org_id, occurred_at, producer,"
    " prev_hash, digest, payload, topic, kafka_partition, kafka_offset)"
    " SELECT * FROM unnest(%b::text[], %b::bigint[], %b::uuid[], %b::text[], %b::text[],"
    " %b::timestamptz[], %b::text[], %b::text[], %b::text[], %b::jsonb[], %b::text[], %b::int[],"
    " %b::bigint[])"
    " ON CONFLICT DO NOTHING RETURNING task_id, sequence"
)
# Read-your-writes and live views wait on this channel instead of polling: one notification per
# task whose row changed, delivered by Postgres only when the transaction commits (= visible).
TASK_CHANNEL = "agentlog_task_views"
_NOTIFY = "SELECT pg_notify(%s, payload) FROM unnest(%s::text[]) AS payload"
ROW_TABLES: tuple[RowTable[Any], ...] = (LLM_CALLS, TOOL_CALLS, APPROVALS, AGENT_EXECUTIONS)
_USAGE_COLUMNS = list(UsageIncrement.model_fields)
_ADD_USAGE = (
    f"INSERT INTO usage_daily ({', '.join(_USAGE_COLUMNS)})"
    " SELECT * FROM unnest(%s::text[], %s::date[], %s::bigint[], %s::bigint[], %s::bigint[],"
    " %s::float8[], %s::bigint[], %s::bigint[])"
    " ON CONFLICT (org_id, day) DO UPDATE SET "
    + ", ".join(f"{c} = usage_daily.{c} + EXCLUDED.{c}" for c in _USAGE_COLUMNS[2:])
)
_SESSION_COLUMNS = list(SessionIncrement.model_fields)
_ADD_SESSIONS = (
    f"INSERT INTO sessions ({', '.join(_SESSION_COLUMNS)})"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::float8[],"
    " %s::int[], %s::timestamptz[], %s::timestamptz[])"
    " ON CONFLICT (session_id) DO UPDATE SET"
    " token_budget = GREATEST(sessions.token_budget, EXCLUDED.token_budget),"
    " tokens_used = sessions.tokens_used + EXCLUDED.tokens_used,"
    " cost_usd = sessions.cost_usd + EXCLUDED.cost_usd,"
    " task_count = sessions.task_count + EXCLUDED.task_count,"
    " first_task_at = LEAST(sessions.first_task_at, EXCLUDED.first_task_at),"
    " last_task_at = GREATEST(sessions.last_task_at, EXCLUDED.last_task_at)"
)
_DEAD_LETTER_COLUMNS = list(DeadLetterRow.model_fields)
_INSERT_DEAD_LETTER = (
    f"INSERT INTO dead_letters ({', '.join(_DEAD_LETTER_COLUMNS)})"
    f" VALUES ({', '.join('%(' + c + ')s' for c in _DEAD_LETTER_COLUMNS)})"
    " ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING"
)
_LISTED_DEAD_LETTER_COLUMNS = ", ".join(DeadLetterEntry.model_fields)
_UPSERT_OFFSET = (
    "INSERT INTO projection_offsets (projector, topic, partition, next_offset, updated_at)"
    " VALUES (%s, %s, %s, %s, now())"
    " ON CONFLICT (projector, topic, partition) DO UPDATE"
    " SET next_offset = EXCLUDED.next_offset, updated_at = now()"
)


# Postgres text and jsonb cannot hold U+0000, which the log can (a query, a program's output): one
# such value made every batch holding it fail, so the projector restarted on it forever and no read
# model moved. The read models show U+FFFD in its place; the log keeps the original.
_NUL = "\x00"
_REPLACEMENT = "\ufffd"
# A \u0000 escape in JSON text, not preceded by an odd number of backslashes (an escaped backslash).
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


class _NulFreeStrDumper(StrDumperUnknown):
    def dump(self, obj: str) -> Any:
        return super().dump(obj.replace(_NUL, _REPLACEMENT) if _NUL in obj else obj)


def _nul_free_json(obj: Any) -> str:
    text = json.dumps(obj)
    return _JSON_NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


# Connections already set up. Once per connection: set_json_dumps derives new dumper classes from
# the connection's current ones, so calling it per batch grew an ever deeper chain of classes (the
# projector's memory grew 26 % in a 2-minute soak, tests/load/test_soak.py).
_STORABLE: weakref.WeakSet[AsyncConnection[Any]] = weakref.WeakSet()


def _storable_text(conn: AsyncConnection[Any]) -> None:
    if conn in _STORABLE:
        return
    conn.adapters.register_dumper(str, _NulFreeStrDumper)
    set_json_dumps(_nul_free_json, context=conn)
    _STORABLE.add(conn)


class TaskProjector:
    """Projects task events into ``task_events`` and ``task_executions``."""

    name = "postgres"
    # A DeadLetterProjector: the runner subscribes it to the dead-letter topic too.
    projects_dead_letters: Literal[True] = True
    # Connection lost or none to be had: PostgreSQL restarting; the batch is written again.
    transient_errors: tuple[type[BaseException], ...] = (OperationalError, PoolTimeout)

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def load_positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT topic, partition, next_offset FROM projection_offsets WHERE projector = %s",
                (self.name,),
            )
            stored = {TopicPartition(t, p): o for t, p, o in await cursor.fetchall()}
        return {tp: stored[tp] for tp in partitions if tp in stored}

    async def write(
        self,
        events: Sequence[Decoded],
        positions: dict[TopicPartition, int],
        *,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            _storable_text(conn)
            if dead_letters:
                rows = [dead_letter_row(d).model_dump() for d in dead_letters]
                for row in rows:
                    row["headers"] = Jsonb(row["headers"])
                async with conn.cursor() as cursor:
                    await cursor.executemany(_INSERT_DEAD_LETTER, rows)
            fresh: list[Decoded] = []
            # A batch may hold the same event twice (a redelivery, or a producer that resent it):
            # only its first copy is inserted, so only that copy may be applied.
            events = _first_copies(events)
            if events:
                columns = [list(column) for column in zip(*(_event_row(d) for d in events), strict=True)]
                cursor = await conn.execute(_INSERT_EVENTS, columns)
                inserted = {(task_id, sequence) for task_id, sequence in await cursor.fetchall()}
                fresh = [d for d in events if (d.event.task_id, d.event.sequence) in inserted]
            if fresh:
                changes = await self._apply_to_views(conn, fresh)
                fresh_events = [d.event for d in fresh]
                for table in ROW_TABLES:
                    await _apply_to_rows(conn, table, fresh_events)
                await _add_increments(conn, _ADD_USAGE, usage_increments(fresh_events))
                await _add_increments(conn, _ADD_SESSIONS, session_increments(changes))
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    _UPSERT_OFFSET,
                    [(self.name, tp.topic, tp.partition, offset) for tp, offset in positions.items()],
                )

    async def _apply_to_views(
        self, conn: Any, fresh: Sequence[Decoded]
    ) -> list[tuple[TaskView | None, TaskView]]:
        """Applies ``fresh`` to the task views; returns each changed view before and after."""
        by_task: dict[str, list[Decoded]] = defaultdict(list)
        for decoded in fresh:
            by_task[decoded.event.task_id].append(decoded)
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(
            "SELECT * FROM task_executions WHERE task_id = ANY(%s) FOR UPDATE", (list(by_task),)
        )
        views = {row["task_id"]: TaskView.model_validate(row) for row in await cursor.fetchall()}
        updated: list[TaskView] = []
        for task_id, decoded_events in by_task.items():
            view = views.get(task_id) or new_view(decoded_events[0].event)
            for decoded in sorted(decoded_events, key=lambda d: d.event.sequence):
                view = apply(view, decoded.event)
            updated.append(view)
        await cursor.executemany(_UPSERT_VIEW, [view.model_dump() for view in updated])
        await cursor.execute(_NOTIFY, (TASK_CHANNEL, [task_notification(view) for view in updated]))
        return [(views.get(view.task_id), view) for view in updated]


async def _apply_to_rows(conn: Any, table: RowTable[Any], fresh: Sequence[Event]) -> None:
    """Folds ``fresh`` into the rows of ``table`` they touch: one read and one upsert per batch."""
    keys = event_keys(table, fresh)
    if not keys:
        return
    names = [column for column, _ in table.key_columns]
    arrays = ", ".join(f"%s::{kind}[]" for _, kind in table.key_columns)
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        f"SELECT t.* FROM {table.name} t JOIN unnest({arrays}) AS k({', '.join(names)})"
        f" USING ({', '.join(names)}) FOR UPDATE OF t",
        [list(column) for column in zip(*keys, strict=True)],
    )
    existing: dict[Key, Any] = {}
    for row in await cursor.fetchall():
        model = table.row_type.model_validate(row)
        existing[table.key_of_row(model)] = model
    rows = fold_rows(table, existing, fresh)
    columns = list(table.row_type.model_fields)
    await cursor.executemany(
        f"INSERT INTO {table.name} ({', '.join(columns)})"
        f" VALUES ({', '.join('%(' + c + ')s' for c in columns)})"
        f" ON CONFLICT ({', '.join(names)}) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in names),
        [row.model_dump() for row in rows],
    )


async def _add_increments(conn: Any, statement: str, increments: Sequence[Any]) -> None:
    """Adds ``increments`` (models whose fields are the statement's columns) in one statement."""
    if increments:
        rows = [tuple(increment.model_dump().values()) for increment in increments]
        await conn.execute(statement, [list(column) for column in zip(*rows, strict=True)])


def _first_copies(events: Sequence[Decoded]) -> list[Decoded]:
    """``events`` without repeats of a (task id, sequence) already in it, in their order."""
    seen: set[tuple[str, int]] = set()
    unique: list[Decoded] = []
    for decoded in events:
        key = (decoded.event.task_id, decoded.event.sequence)
        if key not in seen:
            seen.add(key)
            unique.append(decoded)
    return unique


def task_notification(view: TaskView) -> str:
    """The payload of a task-view notification: ``task_id status last_sequence event_count``."""
    return f"{view.task_id} {view.status} {view.last_sequence} {view.event_count}"


def _event_row(decoded: Decoded) -> tuple[Any, ...]:
    event = decoded.event
    envelope = event.envelope
    return (
        envelope.task_id,
        envelope.sequence,
        envelope.event_id,
        event.event_type,
        envelope.org_id,
        envelope.occurred_at,
        envelope.producer,
        envelope.prev_hash,
        event.digest,
        Jsonb(event.payload.model_dump(mode="json")),
        decoded.topic,
        decoded.partition,
        decoded.offset,
    )


class TaskQueries:
    """Reads of the Postgres read models, for the REST API."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def task(self, task_id: str) -> TaskView | None:
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute("SELECT * FROM task_executions WHERE task_id = %s", (task_id,))
            row = await cursor.fetchone()
        return TaskView.model_validate(row) if row else None

    async def events(
        self, task_id: str, *, after_sequence: int = -1, limit: int = 100
    ) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "SELECT task_id, sequence, event_id, event_type, occurred_at, producer, prev_hash, digest,"
                " payload, topic, kafka_partition, kafka_offset FROM task_events"
                " WHERE task_id = %s AND sequence > %s ORDER BY sequence LIMIT %s",
                (task_id, after_sequence, limit),
            )
            rows = await cursor.fetchall()
        for row in rows:
            if isinstance(row["payload"], str):
                row["payload"] = json.loads(row["payload"])
        return rows

    async def approvals(self, task_id: str) -> list[dict[str, Any]]:
        """The task's approvals (requested ones), each with its decision if one was recorded."""
        return await self._rows(
            "SELECT approval_id, tool, arguments_json, rule, reason, requested_at, status, decided_by,"
            " decision_reason, decided_at FROM approvals"
            " WHERE task_id = %s AND requested_at IS NOT NULL ORDER BY requested_at, approval_id",
            task_id,
        )

    async def pending_approvals(self, org_id: str, *, limit: int = 100) -> list[ApprovalRow]:
        """The org's approvals still waiting for a decision, oldest first."""
        rows = await self._rows(
            "SELECT * FROM approvals WHERE org_id = %s AND status = 'pending' AND requested_at IS NOT NULL"
            " ORDER BY requested_at LIMIT %s",
            org_id,
            limit,
        )
        return [ApprovalRow.model_validate(row) for row in rows]

    async def llm_calls(self, task_id: str) -> list[LlmCallRow]:
        rows = await self._rows(
            "SELECT * FROM llm_calls WHERE task_id = %s ORDER BY requested_at NULLS LAST, ended_at, attempt",
            task_id,
        )
        return [LlmCallRow.model_validate(row) for row in rows]

    async def tool_calls(self, task_id: str) -> list[ToolCallRow]:
        rows = await self._rows(
            "SELECT * FROM tool_calls WHERE task_id = %s ORDER BY requested_at NULLS LAST, idempotency_key",
            task_id,
        )
        return [ToolCallRow.model_validate(row) for row in rows]

    async def agents(self, task_id: str) -> list[AgentRow]:
        rows = await self._rows(
            "SELECT * FROM agent_executions WHERE task_id = %s ORDER BY started_at NULLS LAST, agent_id",
            task_id,
        )
        return [AgentRow.model_validate(row) for row in rows]

    async def usage(self, org_id: str, first_day: date, last_day: date) -> list[UsageIncrement]:
        """The org's LLM usage per UTC day from ``first_day`` to ``last_day`` (days without calls
        have no row)."""
        rows = await self._rows(
            "SELECT * FROM usage_daily WHERE org_id = %s AND day BETWEEN %s AND %s ORDER BY day",
            org_id,
            first_day,
            last_day,
        )
        return [UsageIncrement.model_validate(row) for row in rows]

    async def session(self, session_id: str) -> SessionIncrement | None:
        """The session's budget and what its tasks have used (the stored totals)."""
        rows = await self._rows("SELECT * FROM sessions WHERE session_id = %s", session_id)
        return SessionIncrement.model_validate(rows[0]) if rows else None

    async def tasks(self, where: TaskFilter, *, limit: int) -> list[TaskView]:
        """The org's tasks matching ``where``, newest submission first (keyset-paged: a task is listed
        once its submission is projected)."""
        conditions = ["org_id = %(org_id)s", "submitted_at IS NOT NULL"]
        for column in ("status", "user_id", "session_id", "execution_mode"):
            if getattr(where, column) is not None:
                conditions.append(f"{column} = %({column})s")
        if where.submitted_from is not None:
            conditions.append("submitted_at >= %(submitted_from)s")
        if where.submitted_to is not None:
            conditions.append("submitted_at < %(submitted_to)s")
        if where.before is not None:
            conditions.append("(submitted_at, task_id) < (%(before_at)s, %(before_id)s)")
        params = where.model_dump(exclude={"before"})
        if where.before is not None:
            params |= {"before_at": where.before[0], "before_id": where.before[1]}
        rows = await self._rows(
            f"SELECT * FROM task_executions WHERE {' AND '.join(conditions)}"
            " ORDER BY submitted_at DESC, task_id DESC LIMIT %(limit)s",
            params | {"limit": limit},
        )
        return [TaskView.model_validate(row) for row in rows]

    async def applied(self, projector: str, position: Position) -> bool:
        """Whether ``projector`` has stored its rows for the record at ``position`` (its stored next
        offset is past it)."""
        rows = await self._rows(
            "SELECT next_offset > %(offset)s AS done FROM projection_offsets"
            " WHERE projector = %(projector)s AND topic = %(topic)s AND partition = %(partition)s",
            {"projector": projector, **position._asdict()},
        )
        return bool(rows and rows[0]["done"])

    async def dead_letters(
        self, org_id: str | None, *, before: DeadLetterCursor | None, limit: int
    ) -> list[DeadLetterEntry]:
        """Dead letters newest first (of ``org_id`` only, when given: those whose record named it),
        the page ending before ``before``; the next page's cursor is ``DeadLetterCursor.of(last)``."""
        conditions = ["true"]
        params: list[Any] = []
        if org_id is not None:
            conditions.append("org_id = %s")
            params.append(org_id)
        if before is not None:
            conditions.append("(dead_lettered_at, id) < (%s, %s)")
            params += [before.dead_lettered_at, before.id]
        rows = await self._rows(
            f"SELECT {_LISTED_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE {' AND '.join(conditions)}"
            " ORDER BY dead_lettered_at DESC, id DESC LIMIT %s",
            *params,
            limit,
        )
        return [DeadLetterEntry.model_validate(row) for row in rows]

    async def usage_breakdown(
        self, org_id: str, first_day: date, last_day: date, group_by: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The org's completed LLM calls from ``first_day`` to ``last_day`` (UTC days of their end),
        summed per combination of ``group_by`` keys (``day``, ``user``, ``model``): one dict per
        group with those keys (``day``, ``user_id``, ``model``) plus ``org_id``, ``prompt_tokens``,
        ``completion_tokens``, ``total_tokens``, ``cost_usd``, ``calls`` and ``cache_hits``, ordered
        by the keys. Read from ``llm_calls`` (``usage_daily`` only has days); the user is the
        task's submitter (``llm_calls`` has no user column)."""
        columns = {
            "day": "(c.ended_at AT TIME ZONE 'UTC')::date",
            "user": "t.user_id",
            "model": "c.model",
        }
        names = {"day": "day", "user": "user_id", "model": "model"}
        unknown = [key for key in group_by if key not in columns]
        if unknown or not group_by:
            raise ValueError(f"cannot group usage by {list(group_by)!r}; choose from {list(columns)}")
        keys = list(dict.fromkeys(group_by))  # a repeated key groups once
        selected = ", ".join(f"{columns[key]} AS {names[key]}" for key in keys)
        positions = ", ".join(str(k + 1) for k in range(len(keys)))
        # Same counting as usage_daily: completed calls only, each attempt its own call.
        return await self._rows(
            f"SELECT {selected}, %(org_id)s::text AS org_id,"
            " sum(c.prompt_tokens)::bigint AS prompt_tokens,"
            " sum(c.completion_tokens)::bigint AS completion_tokens,"
            " sum(c.total_tokens)::bigint AS total_tokens, sum(c.cost_usd) AS cost_usd,"
            " count(*) AS calls, count(*) FILTER (WHERE c.cache_hit) AS cache_hits"
            " FROM llm_calls c LEFT JOIN task_executions t ON t.task_id = c.task_id"
            " WHERE c.org_id = %(org_id)s AND c.status = 'completed'"
            " AND c.ended_at >= %(first)s AND c.ended_at < %(end)s"
            f" GROUP BY {positions} ORDER BY {positions}",
            {
                "org_id": org_id,
                "first": datetime.combine(first_day, time.min, UTC),
                "end": datetime.combine(last_day + timedelta(days=1), time.min, UTC),
            },
        )

    async def _rows(self, query: str, *params: Any) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            # One mapping argument is passed as named parameters; otherwise positional ones.
            args = params[0] if len(params) == 1 and isinstance(params[0], dict) else params
            await cursor.execute(query, args)  # type: ignore[arg-type]
            return await cursor.fetchall()
