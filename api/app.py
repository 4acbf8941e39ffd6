"""The REST API application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from api import errors
from api.deps import Resources
from api.keys import KeyStore
from api.rate_limit import RateLimiter
from api.routes import keys, org_views, tasks
from projections.migrate import migrate
from projections.postgres import TaskQueries
from schemas.codec import EventCodec
from schemas.registry.client import RegistryClient
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
            pool = AsyncConnectionPool(settings.postgres_dsn, min_size=1, max_size=8, open=False)
            await pool.open(wait=True)
            stack.push_async_callback(pool.close)
            redis = Redis.from_url(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            app.state.resources = Resources(
                settings=settings,
                producer=producer,
                queries=TaskQueries(pool),
                redis=redis,
                keys=KeyStore(pool),
                limiter=RateLimiter(redis, prefix=settings.topic_prefix),
            )
            yield

    app = FastAPI(
        title="agentlog",
        version="0.1.0",
        summary="Event-sourced multi-agent platform on Kafka: submit tasks, query read models.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(tasks.router)
    app.include_router(org_views.router)
    app.include_router(keys.router)

    @app.get("/healthz", tags=["health"], operation_id="health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "offline_llm": settings.offline}

    return app
