"""The projectors are exact under at-least-once delivery: real task histories (read back from the
log) delivered shuffled, in uneven batches, with repeats and whole batches redelivered, give the
same rows and documents as a clean in-order projection, and ``reconcile`` finds no difference
from the log.

Each projection goes into its own throwaway Postgres schema and index prefix, so neither the
platform's read models nor other tests are touched.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool

from projections.elastic import AuditIndexProjector, ensure_index_template
from projections.migrate import migrate
from projections.postgres import TaskProjector
from projections.rebuild import with_options
from projections.reconcile import reconcile
from schemas.events import Event, TaskSubmitted
from streams.consumer import Decoded
from streams.history import partition_for
from streams.settings import Settings
from streams.topics import EVENTS, REQUESTS
from tests.fixtures import read_models
from tests.integration.conftest import submit_and_wait, task_history
from tests.integration.test_read_models import PLANNED_QUERY

SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def histories(platform: Settings) -> tuple[str, list[list[Event]]]:
    """An org of its own and the logged histories of its tasks: two simple ones and a planned one
    (subtasks, a session's usage)."""
    org = f"exact-{uuid.uuid4().hex[:8]}"
    bodies: list[dict[str, Any]] = [
        {"query": "What is (17 + 25) * 3?"},
        {"query": PLANNED_QUERY, "session_id": f"s-{uuid.uuid4().hex[:8]}", "token_budget": 50000},
        {"query": "What is 2 ** 10?"},
    ]
    views = [submit_and_wait(platform, body, org=org) for body in bodies]
    return org, [task_history(platform, view["task_id"]) for view in views]


def deliveries(settings: Settings, history: Sequence[Event]) -> list[Decoded]:
    """The events as the projectors receive them, where they are on the log (by topic and key)."""
    partition = partition_for(history[0].task_id, settings.topic_partitions)
    return [
        Decoded(
            event,
            (REQUESTS if isinstance(event.payload, TaskSubmitted) else EVENTS).name(settings),
            partition,
            event.sequence,
        )
        for event in history
    ]


def scrambled(events: Sequence[Decoded], rnd: random.Random) -> list[list[Decoded]]:
    """``events`` shuffled across tasks and sequences, each delivered one to three times, cut into
    batches of 1 to 7, and a third of the batches delivered again later (a redelivery after a
    crash before the commit)."""
    repeated = [decoded for decoded in events for _ in range(rnd.randint(1, 3))]
    rnd.shuffle(repeated)
    batches: list[list[Decoded]] = []
    while repeated:
        size = rnd.randint(1, 7)
        batches.append(repeated[:size])
        repeated = repeated[size:]
    for batch in rnd.sample(batches, len(batches) // 3):
        batches.insert(rnd.randint(0, len(batches)), list(batch))
    return batches


@dataclass(frozen=True)
class Projection:
    schema: str
    prefix: str
    rows: TaskProjector
    documents: AuditIndexProjector

    async def write(self, batch: Sequence[Decoded]) -> None:
        await self.rows.write(batch, {})
        await self.documents.write(batch, {})

    def settings(self, platform: Settings) -> Settings:
        """The platform's settings (its log) with this projection as the read models."""
        return platform.model_copy(
            update={
                "postgres_dsn": with_options(platform.postgres_dsn, f"-c search_path={self.schema}"),
                "es_index_prefix": self.prefix,
            }
        )


@asynccontextmanager
async def projection(stack: Settings, name: str) -> AsyncIterator[Projection]:
    """A fresh schema (migrated) and index prefix with a projector for each; removed afterwards."""
    schema, prefix = f"test_{name}_{uuid.uuid4().hex[:8]}", f"test-{name}-{uuid.uuid4().hex[:8]}-audit"
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    dsn = with_options(stack.postgres_dsn, f"-c search_path={schema}")
    client = AsyncElasticsearch(stack.elasticsearch_url)
    try:
        await migrate(dsn)
        await ensure_index_template(client, prefix)
        async with AsyncConnectionPool(dsn, min_size=1, max_size=1, open=False) as pool:
            yield Projection(schema, prefix, TaskProjector(pool), AuditIndexProjector(client, prefix))
    finally:
        await client.indices.delete(index=f"{prefix}-*", allow_no_indices=True, ignore_unavailable=True)
        await client.indices.delete_index_template(name=prefix)
        await client.close()
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.parametrize("seed", SEEDS)
async def test_scrambled_deliveries_project_exactly_what_a_clean_in_order_projection_does(
    platform: Settings, stack: Settings, histories: tuple[str, list[list[Event]]], seed: int
) -> None:
    org, logged = histories
    events = [decoded for history in logged for decoded in deliveries(platform, history)]
    rnd = random.Random(seed)
    batches = scrambled(events, rnd)
    assert len(batches) > len(logged) and sum(map(len, batches)) > len(events)

    async with projection(stack, "clean") as clean, projection(stack, "scrambled") as mixed:
        for history in logged:
            await clean.write(deliveries(platform, history))
        for batch in batches:
            await mixed.write(batch)

        assert read_models.projection_tables(stack.postgres_dsn, mixed.schema) == (
            read_models.projection_tables(stack.postgres_dsn, clean.schema)
        )
        assert read_models.documents(stack.elasticsearch_url, mixed.prefix) == (
            read_models.documents(stack.elasticsearch_url, clean.prefix)
        )
        # Against the log itself (this org's tasks on the platform's topics).
        report = await reconcile(mixed.settings(platform), org=org)
    assert report.differences == []
    assert report.totals["log"].tasks == len(logged)
    assert report.totals["postgres"] == report.totals["elasticsearch"] == report.totals["log"]


async def test_reconcile_finds_what_a_projection_lost(
    platform: Settings, stack: Settings, histories: tuple[str, list[list[Event]]]
) -> None:
    """The check above can fail: a projection missing one event is reported, in both stores."""
    org, logged = histories
    events = [decoded for history in logged for decoded in deliveries(platform, history)]
    lost = events[len(events) // 2]
    async with projection(stack, "lossy") as lossy:
        await lossy.write([decoded for decoded in events if decoded is not lost])
        report = await reconcile(lossy.settings(platform), org=org)

    assert {(d.task_id, d.source, d.kind) for d in report.differences} >= {
        (lost.event.task_id, "postgres", "events"),
        (lost.event.task_id, "elasticsearch", "events"),
        (lost.event.task_id, "postgres", "ordered_hash"),
    }
