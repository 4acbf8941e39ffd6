"""Is the local stack up? One probe of each service, shared by the test suite and the bench."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import redis

from streams.settings import Settings


def _kafka_answers(bootstrap: str) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"Kafka at {bootstrap}: {exc!r}"
    return None


def stack_problems(settings: Settings) -> list[str]:
    """What is wrong with the stack's services (empty when Kafka, Postgres, ES and Redis answer)."""
    problems = []
    if problem := _kafka_answers(settings.kafka_bootstrap):
        problems.append(problem)
    try:
        psycopg.connect(settings.postgres_dsn, connect_timeout=5).close()
    except psycopg.Error as exc:
        problems.append(f"PostgreSQL at {settings.postgres_dsn}: {exc}")
    try:
        health = httpx.get(f"{settings.elasticsearch_url}/_cluster/health", timeout=5).json()
        if health.get("status") not in ("green", "yellow"):
            problems.append(
                f"Elasticsearch at {settings.elasticsearch_url}: cluster status {health.get('status')}"
            )
    except (httpx.HTTPError, ValueError) as exc:
        problems.append(f"Elasticsearch at {settings.elasticsearch_url}: {exc!r}")
    try:
        redis.Redis.from_url(settings.redis_url, socket_timeout=5).ping()
    except redis.RedisError as exc:
        problems.append(f"Redis at {settings.redis_url}: {exc}")
    return problems
