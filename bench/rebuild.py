"""Rebuild: ``agentlog rebuild postgres`` over a topic of 1,000,000 events, swapped into a fresh database.

The real rebuild code path (:func:`projections.rebuild.rebuild_postgres`): a new schema migrated,
the task topics read from offset 0 outside any consumer group, projected by ``TaskProjector``, and
swapped with the live tables in one transaction. The live side is a fresh database (migrations
applied, no rows: no projector is running), so the figures are the rebuild's own. The backlog
(decider-built task histories, cloned) is written first, untimed.
"""

from __future__ import annotations

import asyncio
import time

import psycopg

from bench import fixtures as fx
from bench.context import BenchContext
from projections.migrate import migrate
from projections.rebuild import rebuild_postgres

SECTION = "rebuild"


class _FirstBatch:
    """Progress callback: when the first batch was projected (start-up = everything before it)."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.records = 0

    def __call__(self, done: int, total: int) -> None:
        if done and self.at is None:
            self.at, self.records = time.perf_counter(), done


async def run(ctx: BenchContext) -> dict[str, float | int | str]:
    settings = fx.section_settings(ctx, SECTION)
    size = ctx.size(full=1_000_000, quick=20_000)
    backlog = fx.Backlog()
    figures: dict[str, float | int | str] = {}
    try:
        async with fx.registry(settings) as settings, fx.codec(settings) as codec:
            await fx.prepare_frames(settings, codec)
            records = fx.backlog_records(fx.templates(), size, backlog)
            began = time.perf_counter()
            await asyncio.to_thread(fx.produce_fast, settings, codec.frames, records)
            figures["rebuild_backlog_write_s"] = round(time.perf_counter() - began, 1)
            async with fx.pg_database(settings, f"bench_{ctx.run_id}_{SECTION}") as dsn:
                await migrate(dsn)
                first = _FirstBatch()
                began = time.perf_counter()
                result = await rebuild_postgres(
                    settings.model_copy(update={"postgres_dsn": dsn}), drop_old=True, on_progress=first
                )
                ended = time.perf_counter()
                await _check(dsn, backlog)
    finally:
        await asyncio.to_thread(fx.delete_kafka, settings, topics=fx.catalogue_topics(settings))
    if first.at is None:
        raise AssertionError("the rebuild projected no batch")
    figures |= {
        # Steady rate: what was projected after the first batch over the time it took (swap included).
        "rebuild_postgres_events_per_s": round((result.records - first.records) / (ended - first.at), 1),
        "rebuild_postgres_seconds": round(ended - began, 1),
        "rebuild_postgres_startup_s": round(first.at - began, 2),
        "rebuild_events": backlog.events,
        "rebuild_tasks": backlog.tasks,
    }
    ctx.note(
        f"rebuild: `agentlog rebuild postgres` (projections/rebuild.py) of {backlog.events} events "
        f"({backlog.tasks} tasks) from offset 0 into a new schema, swapped into a fresh database. events/s "
        "is from its first projected batch to the end of the swap; rebuild_postgres_seconds includes "
        "the migrations and the registry and Kafka start-up (rebuild_postgres_startup_s)."
    )
    return figures


async def _check(dsn: str, backlog: fx.Backlog) -> None:
    """Every event once, every task with the status its history ends in."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        row = await (await conn.execute("SELECT count(*) FROM task_events")).fetchone()
        if not row or row[0] != backlog.events:
            raise AssertionError(f"task_events holds {row and row[0]} rows, {backlog.events} were produced")
        cursor = await conn.execute("SELECT status, count(*) FROM task_executions GROUP BY status")
        statuses = {status: count for status, count in await cursor.fetchall()}
        if statuses != backlog.statuses:
            raise AssertionError(f"task statuses {statuses} differ from the histories' {backlog.statuses}")
