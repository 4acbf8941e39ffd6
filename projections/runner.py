"""Runs one projector (``postgres`` or ``elasticsearch``) as a process: consume, decode, write."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

import uvloop
from elasticsearch import AsyncElasticsearch
from elasticsearch.serializer import OrjsonSerializer
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from projections.elastic import AuditIndexProjector, ensure_index_template
from projections.migrate import migrate
from projections.postgres import TaskProjector
from schemas.codec import EventCodec
from schemas.registry.client import RegistryClient
from streams.consumer import ProjectionLoop, Projector
from streams.producer import EventProducer
from streams.settings import Settings, get_settings
from streams.topics import DEAD_LETTER, TASK_TOPICS

log = logging.getLogger(__name__)

PROJECTORS = ("postgres", "elasticsearch")


def projected_topics(kind: str, settings: Settings) -> list[str]:
    """The topics projector ``kind`` consumes: the task topics, and for Postgres the dead-letter
    topic too (its read model of parked records; the audit index is of task events only)."""
    if kind not in PROJECTORS:
        raise ValueError(f"unknown projector {kind!r}; choose one of {PROJECTORS}")
    extra = (DEAD_LETTER,) if kind == "postgres" else ()
    return [spec.name(settings) for spec in (*TASK_TOPICS, *extra)]


async def run_projector(kind: str, settings: Settings) -> None:
    if kind not in PROJECTORS:
        raise ValueError(f"unknown projector {kind!r}; choose one of {PROJECTORS}")
    async with AsyncExitStack() as stack:
        registry = RegistryClient(settings.schema_registry_url)
        stack.push_async_callback(registry.close)
        await registry.wait_until_ready()
        codec = EventCodec(registry)
        producer = EventProducer(settings, codec, source=f"/agentlog/projector-{kind}")
        await producer.start()
        stack.push_async_callback(producer.stop)
        projector: Projector
        if kind == "postgres":
            await migrate(settings.postgres_dsn)
            # synchronous_commit=off: a Postgres crash may drop the last few hundred ms of committed
            # batches, but rows and their offsets are in one transaction, so they vanish together
            # and are projected again from Kafka. The read model stays exact; commits stop
            # waiting for the WAL flush.
            pool = AsyncConnectionPool(
                settings.postgres_dsn,
                min_size=1,
                max_size=4,
                open=False,
                kwargs={"options": _with_option(settings.postgres_dsn, "-c synchronous_commit=off")},
            )
            await pool.open(wait=True)
            stack.push_async_callback(pool.close)
            projector = TaskProjector(pool)
        else:
            client = AsyncElasticsearch(
                settings.elasticsearch_url, request_timeout=30, serializer=OrjsonSerializer()
            )
            stack.push_async_callback(client.close)
            await ensure_index_template(client, settings.es_index_prefix)
            projector = AuditIndexProjector(client, settings.es_index_prefix)
        loop = ProjectionLoop(
            settings,
            topics=projected_topics(kind, settings),
            projector=projector,
            codec=codec,
            producer=producer,
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, loop.stop)
        log.info("projector %s running", kind)
        await loop.run()


def _with_option(dsn: str, option: str) -> str:
    """The DSN's own ``options`` (e.g. a search_path) plus ``option``: a pool's ``options`` keyword
    replaces the DSN's, so they must be merged, not passed alone."""
    existing = conninfo_to_dict(dsn).get("options")
    return f"{existing} {option}" if existing else option


def main(kind: str) -> None:
    uvloop.run(run_projector(kind, get_settings()))
