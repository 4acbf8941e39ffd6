"""``agentlog rebuild`` on a running platform: the rebuilt read models equal the live ones, are
swapped in while the projectors keep running, and keep receiving the live projectors' writes.

The platform here has its own Postgres schema (a DSN with ``search_path``): a rebuild replaces
every projection table of the schema it serves, and the shared ``public`` schema holds the rows
of every other test platform.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from elasticsearch import Elasticsearch

from projections.rebuild import (
    RebuildError,
    rebuild,
    rebuild_elasticsearch,
    rebuild_postgres,
    with_options,
)
from projections.reconcile import reconcile
from streams.settings import Settings
from tests.fixtures import read_models
from tests.fixtures.platform import running_platform
from tests.integration.conftest import submit_and_wait, wait_for

PLANNED_QUERY = "What is 12 * 7? What is 100 / 4? Then summarise both results."


@pytest.fixture(scope="module")
def rebuild_platform(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    schema = f"test_rebuild_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    dsn = with_options(stack.postgres_dsn, f"-c search_path={schema}")
    prefix = None
    try:
        home: Path = tmp_path_factory.mktemp("agentlog-rebuild")
        with running_platform(stack, home, AGENTLOG_POSTGRES_DSN=dsn) as (settings, _):
            prefix = settings.es_index_prefix
            yield settings.model_copy(update={"postgres_dsn": dsn})
    finally:
        with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        if prefix is not None:
            with Elasticsearch(stack.elasticsearch_url) as client:
                client.indices.delete(index=f"{prefix}_r*", allow_no_indices=True, ignore_unavailable=True)


@pytest.fixture(scope="module")
def tasks(rebuild_platform: Settings) -> list[dict[str, Any]]:
    views = [
        submit_and_wait(rebuild_platform, {"query": "What is (17 + 25) * 3?"}),
        submit_and_wait(
            rebuild_platform,
            {"query": PLANNED_QUERY, "session_id": f"s-{uuid.uuid4().hex[:8]}", "token_budget": 50000},
        ),
        submit_and_wait(rebuild_platform, {"query": "What is 2 ** 10?"}),
    ]
    assert {view["status"] for view in views} == {"completed"}, views
    return views


def _schema(settings: Settings) -> str:
    with psycopg.connect(settings.postgres_dsn) as conn:
        row = conn.execute("SELECT current_schema()").fetchone()
    assert row is not None
    return str(row[0])


def _oid(settings: Settings, qualified: str) -> int:
    with psycopg.connect(settings.postgres_dsn) as conn:
        row = conn.execute("SELECT %s::regclass::oid::bigint", (qualified,)).fetchone()
    assert row is not None
    return int(row[0])


def projection_tables(settings: Settings, schema: str) -> dict[str, list[Any]]:
    return read_models.projection_tables(settings.postgres_dsn, schema)


def documents(settings: Settings) -> dict[str, dict[str, Any]]:
    return read_models.documents(settings.elasticsearch_url, settings.es_index_prefix)


def _aliases(settings: Settings) -> dict[str, set[str]]:
    with Elasticsearch(settings.elasticsearch_url) as client:
        reply = client.indices.get_alias(index=f"{settings.es_index_prefix}*")
    return {index: set(entry["aliases"]) for index, entry in reply.body.items()}


def test_postgres_rebuild_swaps_in_tables_equal_to_the_live_ones(
    rebuild_platform: Settings, tasks: list[dict[str, Any]]
) -> None:
    settings = rebuild_platform
    schema = _schema(settings)
    before = projection_tables(settings, schema)
    old_table = _oid(settings, f'"{schema}".task_events')
    assert len({row[0] for row in before["task_executions"]}) == len(tasks)

    result = asyncio.run(rebuild_postgres(settings))

    (archive,) = result.archived
    try:
        after = projection_tables(settings, schema)
        assert after == before
        assert projection_tables(settings, archive) == before
        # Swapped, not copied: the live name now names the rebuilt table, the old one is archived.
        assert _oid(settings, f'"{schema}".task_events') != old_table
        assert _oid(settings, f'"{archive}".task_events') == old_table
        assert result.serving == [schema]
        assert result.events == len(before["task_events"])
        assert result.records == sum(result.end_offsets.values()) > 0
    finally:
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{archive}" CASCADE')

    # The live projector kept running through the swap and now writes into the rebuilt tables.
    view = submit_and_wait(settings, {"query": "What is 6 * 7?"})
    assert view["status"] == "completed"
    report = asyncio.run(reconcile(settings, sources=("postgres",)))
    assert report.differences == []
    assert report.totals["postgres"].tasks == len(tasks) + 1


def test_postgres_rebuild_while_tasks_run_loses_and_doubles_nothing(
    rebuild_platform: Settings, tasks: list[dict[str, Any]]
) -> None:
    """Tasks run (and the live projector writes) during the rebuild and its swap; the result then
    equals a rebuild made at rest."""
    settings = rebuild_platform
    schema = _schema(settings)
    rebuilt = threading.Event()

    def keep_submitting() -> list[dict[str, Any]]:
        # Tasks one after another until the rebuild is done, so that some run through the swap.
        views = [submit_and_wait(settings, {"query": "What is 3 * 14?"})]
        while not rebuilt.is_set():
            views.append(submit_and_wait(settings, {"query": f"What is {len(views)} * 14?"}))
        return views

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(keep_submitting)
        try:
            during = asyncio.run(rebuild_postgres(settings, drop_old=True))
        finally:
            rebuilt.set()
        views = running.result()
    assert {view["status"] for view in views} == {"completed"}
    assert not during.archived

    at_rest = asyncio.run(rebuild_postgres(settings))

    (archive,) = at_rest.archived
    try:
        assert projection_tables(settings, archive) == projection_tables(settings, schema)
    finally:
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{archive}" CASCADE')
    report = asyncio.run(reconcile(settings, sources=("postgres",)))
    assert report.differences == []


def test_elasticsearch_rebuild_swaps_in_indices_equal_to_the_live_ones(
    rebuild_platform: Settings, tasks: list[dict[str, Any]]
) -> None:
    settings = rebuild_platform
    prefix = settings.es_index_prefix
    before = documents(settings)
    assert before

    result = asyncio.run(rebuild_elasticsearch(settings))

    assert documents(settings) == before
    aliases = _aliases(settings)
    serving = {index for index, names in aliases.items() if prefix in names}
    assert serving == set(result.serving) and all(index.startswith(f"{prefix}_r") for index in serving)
    # The projector's own monthly indices gave their names to the write aliases of the new ones.
    assert set(result.dropped) == {f"{prefix}-{index.rsplit('-', 1)[1]}" for index in serving}
    for index in serving:
        assert f"{prefix}-{index.rsplit('-', 1)[1]}" in aliases[index]

    # The live projector writes through those aliases into the rebuilt indices: no new index, and
    # no document twice behind the search alias.
    view = submit_and_wait(settings, {"query": "What is 9 * 9?"})
    assert view["status"] == "completed"
    # The Elasticsearch projector may trail the Postgres one submit_and_wait waited for.
    expected = len(before) + view["event_count"]

    def indexed() -> dict[str, dict[str, Any]] | None:
        found = documents(settings)
        return found if len(found) >= expected else None

    after = wait_for(indexed, 30, "the new task's documents")
    assert len(after) == expected
    assert {index for index, names in _aliases(settings).items() if prefix in names} == serving

    # A second rebuild archives the first one's indices and moves the write aliases on.
    second = asyncio.run(rebuild_elasticsearch(settings, drop_old=True))
    assert documents(settings) == after
    assert set(second.dropped) == serving and not second.archived
    report = asyncio.run(reconcile(settings))
    assert report.differences == [], report.differences


def test_postgres_rebuild_refuses_a_start_offset(rebuild_platform: Settings) -> None:
    with pytest.raises(RebuildError, match="elasticsearch only"):
        asyncio.run(rebuild("postgres", rebuild_platform, from_offset=10))


def test_elasticsearch_in_place_reindex_from_an_offset_changes_nothing_already_right(
    rebuild_platform: Settings, tasks: list[dict[str, Any]]
) -> None:
    before = documents(rebuild_platform)

    result = asyncio.run(rebuild_elasticsearch(rebuild_platform, from_offset=1))

    assert result.mode == "in_place"
    assert 0 < result.events < len(before)
    assert documents(rebuild_platform) == before
