"""Projection path: events/s into Postgres and into Elasticsearch, and produce-to-visible delay.

The projectors are the platform's own processes (``agentlog run projector-postgres`` /
``projector-elasticsearch``, exactly what ``agentlog serve`` starts), pointed at this section's
topics, a fresh Postgres database and a fresh index prefix:

- throughput: a backlog of realistic task histories is written first (untimed), then the projector
  is started and drains it; the rate is taken from its durable progress (offsets stored with the
  rows for Postgres, offsets committed after the bulk request for Elasticsearch), from its first
  batch to its last, so process start-up and group join are reported apart;
- visible delay: tasks then run at a moderate steady rate, their events published the way the
  processor does (``EventProducer.publish`` per decision, acks=all), and each event's delay is the
  time from the publish call to the first poll that finds it (Postgres: the ``task_events`` row;
  Elasticsearch: a search on the audit alias, i.e. searchable, not just indexed).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

import psycopg
from elasticsearch import AsyncElasticsearch

from bench import fixtures as fx
from bench.context import BenchContext
from bench.measure import percentile
from processors.task.history import event_id_for
from projections.migrate import migrate
from streams.producer import EventProducer
from streams.settings import Settings
from streams.topics import DEAD_LETTER

SECTION = "projection"
Finder = Callable[[list[str]], Awaitable[Iterable[str]]]


async def run(ctx: BenchContext) -> dict[str, float | int | str]:
    settings = fx.section_settings(ctx, SECTION)
    backlog_size = ctx.size(full=60_000, quick=8_000)
    rate = 200.0  # events/s: a moderate load, far below either projector's capacity
    seconds = ctx.seconds(full=10.0, quick=2.0)
    tmpls = fx.templates()
    figures: dict[str, float | int | str] = {}
    try:
        async with fx.registry(settings) as settings, fx.codec(settings) as codec:
            await fx.prepare_frames(settings, codec)
            backlog = fx.Backlog()
            records = fx.backlog_records(tmpls, backlog_size, backlog)
            await asyncio.to_thread(fx.produce_fast, settings, codec.frames, records)
            async with fx.pg_database(settings, f"bench_{ctx.run_id}_{SECTION}") as dsn:
                pg, pg_steady = await _postgres(settings, codec, dsn, backlog, rate=rate, seconds=seconds)
            figures |= pg
            es, _ = await _elasticsearch(
                settings, codec, backlog.events + pg_steady, rate=rate, seconds=seconds
            )
            figures |= es
            dead = (await fx.end_offsets(settings, [DEAD_LETTER.name(settings)]))[DEAD_LETTER.name(settings)]
            if dead:
                raise AssertionError(f"{dead} records were dead-lettered during the projection bench")
    finally:
        await fx.delete_es(settings)
        await asyncio.to_thread(
            fx.delete_kafka,
            settings,
            topics=fx.catalogue_topics(settings),
            groups=[f"{settings.topic_prefix}-projector-{kind}" for kind in ("postgres", "elasticsearch")],
        )
    figures["projection_backlog_events"] = backlog.events
    figures["projection_visible_rate_events_per_s"] = rate
    ctx.note(
        f"projection: throughput = a backlog of {backlog.events} events ({backlog.tasks} tasks of 13-23 "
        "events, decider-built) drained by the platform's projector process (agentlog run projector-*), "
        "rate from its durable offsets between its first and last batch; start-up reported apart."
    )
    ctx.note(
        f"projection: visible delay = publish call (EventProducer, acks=all) to first poll that finds the "
        f"event, tasks running at ~{rate:.0f} events/s for {seconds:.0f} s; Postgres polled every 5 ms "
        "(task_events row), Elasticsearch searched every 10 ms on the audit alias. Elasticsearch's "
        "refresh_interval is the default 1 s (the template does not set it), so its delay is mostly the "
        "wait for the next refresh; a GET by _id would be real-time and faster but is not how the audit "
        "index is queried."
    )
    return figures


async def _postgres(
    settings: Settings, codec: fx.Codec, dsn: str, backlog: fx.Backlog, *, rate: float, seconds: float
) -> tuple[dict[str, float | int | str], int]:
    await migrate(dsn)  # the projector would do it too; done first so progress can be read at once
    component = fx.Component("projector-postgres", settings, postgres_dsn=dsn)
    progress = fx.PostgresProgress(dsn)
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        await component.start()
        drain = await fx.watch_drain(progress, backlog.events, component, timeout=600)
        await _check_postgres(conn, backlog.events, backlog.tasks, backlog.statuses)

        async def find(ids: list[str]) -> Iterable[str]:
            cursor = await conn.execute(
                "SELECT event_id::text FROM task_events WHERE event_id = ANY(%s::uuid[])", (ids,)
            )
            return [row[0] for row in await cursor.fetchall()]

        steady = await visible_delays(settings, codec, find, rate=rate, seconds=seconds, poll_s=0.005)
        component.check()
        await _check_postgres(conn, backlog.events + steady.events, backlog.tasks + steady.tasks, None)
    finally:
        await component.stop()
        await progress.close()
        await conn.close()
    return {
        "projection_postgres_events_per_s": round(drain.events_per_s, 1),
        "projection_postgres_startup_s": round(drain.startup_s, 2),
        **steady.summary("projection_postgres"),
    }, steady.events


async def _check_postgres(
    conn: psycopg.AsyncConnection,  # type: ignore[type-arg]
    events: int,
    tasks: int,
    statuses: dict[str, int] | None,
) -> None:
    """The rows must be exactly what was produced: every event once, every task with its status."""
    cursor = await conn.execute("SELECT count(*) FROM task_events")
    row = await cursor.fetchone()
    if not row or row[0] != events:
        raise AssertionError(f"task_events holds {row and row[0]} rows, {events} events were produced")
    cursor = await conn.execute(
        "SELECT status, count(*), sum(event_count) FROM task_executions GROUP BY status"
    )
    rows = await cursor.fetchall()
    if sum(r[1] for r in rows) != tasks or sum(r[2] for r in rows) != events:
        raise AssertionError(f"task_executions {rows} does not match {tasks} tasks / {events} events")
    if statuses is not None and {r[0]: r[1] for r in rows} != statuses:
        raise AssertionError(f"task statuses {rows} differ from the histories' {statuses}")


async def _elasticsearch(
    settings: Settings, codec: fx.Codec, total: int, *, rate: float, seconds: float
) -> tuple[dict[str, float | int | str], int]:
    component = fx.Component("projector-elasticsearch", settings)
    group = f"{settings.topic_prefix}-projector-elasticsearch"
    progress = fx.GroupProgress(settings, group, list(fx.topic_names(settings).values()))
    alias = settings.es_index_prefix
    client = AsyncElasticsearch(settings.elasticsearch_url, request_timeout=30)
    try:
        await component.start()
        drain = await fx.watch_drain(progress, total, component, timeout=600)
        await _check_es(client, alias, total)

        async def find(ids: list[str]) -> Iterable[str]:
            found = await client.search(
                index=alias, query={"ids": {"values": ids}}, size=len(ids), source=False
            )
            return [hit["_id"] for hit in found["hits"]["hits"]]

        steady = await visible_delays(settings, codec, find, rate=rate, seconds=seconds, poll_s=0.01)
        component.check()
        await _check_es(client, alias, total + steady.events)
    finally:
        await component.stop()
        await progress.close()
        await client.close()
    return {
        "projection_elasticsearch_events_per_s": round(drain.events_per_s, 1),
        "projection_elasticsearch_startup_s": round(drain.startup_s, 2),
        **steady.summary("projection_elasticsearch"),
    }, steady.events


async def _check_es(client: AsyncElasticsearch, alias: str, events: int) -> None:
    await client.indices.refresh(index=alias)
    count = (await client.count(index=alias))["count"]
    if count != events:
        raise AssertionError(f"the audit index holds {count} documents, {events} events were produced")


# -- steady load and visibility ---------------------------------------------------------------


class Steady:
    """Delays (ms) from publish to visible, of every event of the tasks run at a steady rate."""

    def __init__(self) -> None:
        self.delays_ms: list[float] = []
        self.events = 0
        self.tasks = 0
        self.seconds = 0.0

    def summary(self, prefix: str) -> dict[str, float | int | str]:
        return {
            f"{prefix}_visible_p50_ms": round(percentile(self.delays_ms, 50), 1),
            f"{prefix}_visible_p99_ms": round(percentile(self.delays_ms, 99), 1),
            f"{prefix}_visible_max_ms": round(max(self.delays_ms), 1),
            f"{prefix}_visible_events": self.events,
            f"{prefix}_visible_achieved_events_per_s": round(self.events / self.seconds, 1),
        }


async def visible_delays(
    settings: Settings, codec: fx.Codec, find: Finder, *, rate: float, seconds: float, poll_s: float
) -> Steady:
    """Run tasks at ~``rate`` events/s for ``seconds``; time each event from publish to found."""
    concurrency = 16
    started_at = datetime.now(UTC).replace(microsecond=0)
    # Built up front: the decider costs ~4 ms a task, which must not stall the loop mid-measurement.
    needed = math.ceil(rate * seconds / 13 * 1.5) + concurrency
    histories = [
        fx.build_task(str(uuid.uuid4()), n, fx.SHAPES[n % len(fx.SHAPES)], started=started_at)
        for n in range(needed)
    ]
    per_decision = sum(len(h.events) for h in histories) / sum(len(h.decisions) for h in histories)
    mean_gap = concurrency * per_decision / rate
    topics = fx.topic_names(settings)
    sent: dict[str, float] = {}
    visible: dict[str, float] = {}
    result = Steady()
    producer = EventProducer(settings, codec.codec, source="/agentlog/bench-processor")
    await producer.start()
    queue = iter(histories)
    rng = random.Random(11)
    producing = True

    async def driver() -> None:
        # One task at a time, its decisions in order with think time between them: a processor's task.
        due = time.perf_counter()
        while time.perf_counter() < deadline:
            history = next(queue, None)
            if history is None:
                raise RuntimeError("ran out of pre-built task histories; raise `needed`")
            result.tasks += 1
            for decision in history.decisions:
                # Due times, not sleeps after each publish: the publish's own time must not slow the rate.
                due += rng.expovariate(1 / mean_gap)
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                kind = "requests" if decision[0][0].event_type == "TaskSubmitted" else "events"
                began = time.perf_counter()
                await producer.publish(topics[kind], decision)
                for event, _ in decision:
                    sent[str(event.envelope.event_id)] = began
                result.events += len(decision)

    async def poller() -> None:
        while producing or len(visible) < len(sent):
            pending = [event_id for event_id in sent if event_id not in visible]
            began = time.perf_counter()
            # Visible no later than the start of the query whose snapshot holds it.
            for chunk in range(0, len(pending), 1000):
                for event_id in await find(pending[chunk : chunk + 1000]):
                    visible.setdefault(event_id, began)
            if time.perf_counter() > deadline + 60:
                raise TimeoutError(f"{len(sent) - len(visible)} events not visible 60 s after the load")
            await asyncio.sleep(poll_s)

    began = time.perf_counter()
    deadline = began + seconds
    polling = asyncio.create_task(poller())
    try:
        await asyncio.gather(*(driver() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - began
        producing = False
        await polling
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await producer.stop()
    if set(visible) != set(sent):
        raise AssertionError("some events never became visible")
    result.delays_ms = [(visible[event_id] - at) * 1000 for event_id, at in sent.items()]
    # Event ids are derived from (task, sequence): a cheap check that every history was whole.
    assert all(str(event_id_for(h.task_id, 0)) in sent for h in histories[: result.tasks])
    return result
