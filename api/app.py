"""The REST API application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from elasticsearch import AsyncElasticsearch
from fastapi import Depends, FastAPI
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from api import errors
from api.deps import Resources, reject_nul
from api.keys import KeyStore
from api.rate_limit import RateLimiter
from api.routes import audit_timeline, console, keys, ops, org_views, search, stream, tasks, whoami
from api.routes import fork as fork_routes
from api.routes import integrity as integrity_routes
from api.routes import reexecute as reexecute_routes
from projections.lag import LagReader
from projections.migrate import migrate
from projections.postgres import TaskQueries
from schemas.codec import EventCodec
from schemas.registry.client import RegistryClient
from streams import tracing
from streams.producer import EventProducer
from streams.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            registry = RegistryClient(settings.schema_registry_url)
            stack.push_async_callback(registry.close)
            await registry.wait_until_ready()
            producer = EventProducer(settings, EventCodec(registry), source="/agentlog/api")
            await producer.start()
            stack.push_async_callback(producer.stop)
            # The API's own tables (api_keys) come from the same migrations as the read models; the
            # advisory lock in migrate() makes this safe beside a starting projector.
            await migrate(settings.postgres_dsn)
            # check: a pooled connection that died with a PostgreSQL restart is replaced on checkout
            # instead of failing the request that drew it (tests/faults/test_service_outages.py).
            pool = AsyncConnectionPool(
                settings.postgres_dsn,
                min_size=1,
                max_size=8,
                open=False,
                check=AsyncConnectionPool.check_connection,
            )
            await pool.open(wait=True)
            stack.push_async_callback(pool.close)
            # Bounded: a hung Redis must cost a request a second, not hang it (the rate limiter fails
            # open, the prompt cache misses; docs/reliability.md).
            redis = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
            stack.push_async_callback(redis.aclose)
            # No connection is made here: a search or readiness probe finds out whether ES answers.
            elasticsearch = AsyncElasticsearch(settings.elasticsearch_url, request_timeout=10)
            stack.push_async_callback(elasticsearch.close)
            kafka_admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
            await kafka_admin.start()
            stack.push_async_callback(kafka_admin.close)
            lag = LagReader(settings)
            await lag.start()
            stack.push_async_callback(lag.stop)
            resources = Resources(
                settings=settings,
                producer=producer,
                queries=TaskQueries(pool),
                redis=redis,
                keys=KeyStore(pool),
                limiter=RateLimiter(redis, prefix=settings.topic_prefix),
                pool=pool,
                elasticsearch=elasticsearch,
                kafka_admin=kafka_admin,
                lag=lag,
            )
            app.state.resources = resources
            gauges = asyncio.create_task(ops.refresh_lag_gauges(resources), name="lag-gauges")
            stack.push_async_callback(_cancel, gauges)
            yield

    app = FastAPI(
        title="agentlog",
        version="0.1.0",
        summary="Event-sourced multi-agent platform on Kafka: submit tasks, query read models.",
        lifespan=lifespan,
        responses=errors.COMMON_RESPONSES,
        dependencies=[Depends(reject_nul)],
    )
    errors.install(app)
    errors.install_openapi(app)
    app.include_router(tasks.router)
    app.include_router(reexecute_routes.router)
    app.include_router(stream.router)
    app.include_router(org_views.router)
    app.include_router(keys.router)
    app.include_router(search.router)
    app.include_router(ops.router)
    app.include_router(integrity_routes.router)
    app.include_router(audit_timeline.router)
    app.include_router(fork_routes.router)
    app.include_router(whoami.router)
    console.install(app)  # the web console at /console/ (docs/console.md)
    # Sees what the exception handlers answer; an error that escapes them counts as a 500.
    app.add_middleware(ops.RequestMetrics)

    @app.get("/healthz", tags=["health"], operation_id="health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "offline_llm": settings.offline}

    if tracing.enabled():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # A server span per request, continuing the caller's traceparent (else a new trace); the
        # submit route hands that span's traceparent on to TaskSubmitted.
        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,metrics,console")
    return app


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
