"""Integration fixtures: a completed task on the session's platform, and Kafka/Postgres/ES helpers."""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from streams.settings import Settings

TASK_TIMEOUT = 60.0
QUERY = "What is (17 + 25) * 3?"


def api(settings: Settings) -> httpx.Client:
    return httpx.Client(base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=10)


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def submit_and_wait(settings: Settings, body: dict[str, Any]) -> dict[str, Any]:
    with api(settings) as client:
        response = client.post("/v1/tasks", json=body)
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
    view = submit_and_wait(platform, {"query": QUERY, "org_id": "acme", "user_id": "alice"})
    assert view["status"] == "completed", view
    return view
