"""Rebuild: the Postgres projection rebuilt from a topic of 1,000,000 events, into fresh tables.

agentlog has no ``rebuild`` command yet, so this measures its equivalent: the platform's Postgres
projector process (``agentlog run projector-postgres``) started against a fresh database
(migrations applied there; a database, not a schema, see ``fixtures.pg_database``) with no stored
offsets, so it reads the task topics from offset 0 to the end. The backlog (decider-built task
histories, cloned) is written first, untimed.
"""

from __future__ import annotations

import asyncio
import time

import psycopg

from bench import fixtures as fx
from bench.context import BenchContext
from projections.migrate import migrate

SECTION = "rebuild"


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
                component = fx.Component("projector-postgres", settings, postgres_dsn=dsn)
                progress = fx.PostgresProgress(dsn)
                try:
                    await component.start()
                    drain = await fx.watch_drain(
                        progress, backlog.events, component, timeout=900, interval=0.05
                    )
                finally:
                    await component.stop()
                    await progress.close()
                await _check(dsn, backlog)
    finally:
        await asyncio.to_thread(
            fx.delete_kafka,
            settings,
            topics=fx.catalogue_topics(settings),
            groups=[f"{settings.topic_prefix}-projector-postgres"],
        )
    figures |= {
        "rebuild_postgres_events_per_s": round(drain.events_per_s, 1),
        "rebuild_postgres_seconds": round(drain.seconds + drain.startup_s, 1),
        "rebuild_postgres_startup_s": round(drain.startup_s, 2),
        "rebuild_events": backlog.events,
        "rebuild_tasks": backlog.tasks,
    }
    ctx.note(
        f"rebuild: agentlog has no `rebuild` command yet; measured the equivalent consumer loop: the "
        f"platform's Postgres projector process started on a fresh database with no stored offsets, reading "
        f"{backlog.events} events ({backlog.tasks} tasks) from offset 0. events/s is from its first "
        "committed batch to its last; rebuild_postgres_seconds includes process start-up."
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
