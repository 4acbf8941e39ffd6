"""Integration fixtures: a completed task on the session's platform, and Kafka/Postgres/ES helpers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer
from psycopg.rows import dict_row

from api.auth import Role, mint_jwt
from schemas.codec import EventCodec
from schemas.events import Event, RecordDeadLettered
from schemas.registry.client import RegistryClient
from streams.history import read_task_events
from streams.settings import Settings
from streams.topics import DEAD_LETTER

TASK_TIMEOUT = 60.0
QUERY = "What is (17 + 25) * 3?"


def bearer(settings: Settings, org: str = "acme", user: str = "alice", role: str = "operator") -> str:
    """A JWT for ``user`` in ``org`` with ``role``, signed with the test platform's secret."""
    assert settings.jwt_secret, "the test platform runs with AGENTLOG_JWT_SECRET"
    return mint_jwt(
        secret=settings.jwt_secret, org_id=org, user_id=user, role=Role(role), now=int(time.time())
    )


def api(settings: Settings, org: str = "acme", user: str = "alice", role: str = "operator") -> httpx.Client:
    """A REST client calling as ``user`` in ``org`` with ``role`` (a JWT bearer token)."""
    return httpx.Client(
        base_url=f"http://{settings.api_host}:{settings.api_port}",
        timeout=10,
        headers={"Authorization": f"Bearer {bearer(settings, org, user, role)}"},
    )


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def submit_and_wait(
    settings: Settings,
    body: dict[str, Any],
    *,
    org: str = "acme",
    user: str = "alice",
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with api(settings, org, user) as client:
        response = client.post("/v1/tasks", json=body, headers=headers)
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]

        def done() -> dict[str, Any] | None:
            reply = client.get(f"/v1/tasks/{task_id}")
            if reply.status_code != 200:
                return None
            view = reply.json()
            # Ended, and every event projected (the submission comes from the other topic).
            ended = view["status"] in ("completed", "failed", "cancelled", "rejected")
            return view if ended and view["event_count"] == view["last_sequence"] + 1 else None

        return wait_for(done, TASK_TIMEOUT, f"task {task_id} to end in the read model")


def pg_rows(settings: Settings, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(settings.postgres_dsn, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="session")
def completed_task(platform: Settings) -> dict[str, Any]:
    """One task run end to end through the REST API (the view once it completed)."""
    view = submit_and_wait(platform, {"query": QUERY})
    assert view["status"] == "completed", view
    return view


async def read_dead_letters(
    settings: Settings, minimum: int, timeout: float = 60
) -> list[RecordDeadLettered]:
    """The records on the dead-letter topic, once at least ``minimum`` are there (or the timeout)."""
    registry = RegistryClient(settings.schema_registry_url)
    codec = EventCodec(registry)
    consumer = AIOKafkaConsumer(
        DEAD_LETTER.name(settings), bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[RecordDeadLettered] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found) < minimum and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found += [await codec.decode_dead_letter(r.value) for r in records]
    finally:
        await consumer.stop()
        await registry.close()
    return found


def task_history(settings: Settings, task_id: str) -> list[Event]:
    """The task's events read back from the log (not the read models), in sequence order."""

    async def read() -> list[Event]:
        registry = RegistryClient(settings.schema_registry_url)
        try:
            return await read_task_events(settings, EventCodec(registry), task_id)
        finally:
            await registry.close()

    return asyncio.run(read())
