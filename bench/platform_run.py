"""The platform under test: ``agentlog serve`` started in its own namespace, and a task client.

The client submits tasks the way other systems do (a ``TaskSubmitted`` event produced to the
requests topic through the platform's producer and registry) and learns that a task finished from
the Postgres projector's ``NOTIFY`` on commit, so "done" means exactly "visible in the read model"
and the bench adds no polling load to Postgres.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from aiokafka.admin import AIOKafkaAdminClient

from bench.context import REPO, BenchContext
from bench.workload import task_query
from processors.task.history import submission
from projections.postgres import TASK_CHANNEL
from schemas.codec import EventCodec
from schemas.events import TaskSubmitted
from schemas.registry.client import RegistryClient
from streams.producer import EventProducer
from streams.settings import Settings
from streams.topics import REQUESTS

STARTUP_TIMEOUT_S = 120.0
TASK_TIMEOUT_S = 120.0
MAX_STEPS = 21  # K = 20 needs 21 model calls


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Platform:
    """A running ``agentlog serve`` (all components) with ``workers`` processor processes."""

    settings: Settings
    process: subprocess.Popen[bytes]
    home: Path
    workers: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs_tail(self, lines: int = 20) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in sorted(self.home.rglob("*.log"))
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def start_platform(ctx: BenchContext, *, workers: int, name: str) -> Platform:
    """Start the platform against the canned LLM, isolated by topic/index prefix and ports."""
    prefix = ctx.prefix(name)
    home = REPO / ".agentlog" / "bench" / prefix
    home.mkdir(parents=True, exist_ok=True)
    stack = ctx.settings
    env = {
        **os.environ,
        "AGENTLOG_HOME": str(home),
        "AGENTLOG_TOPIC_PREFIX": prefix,
        "AGENTLOG_ES_INDEX_PREFIX": f"{prefix}-audit",
        "AGENTLOG_API_PORT": str(free_port()),
        "AGENTLOG_REGISTRY_PORT": str(free_port()),
        "AGENTLOG_FAUST_DATA_DIR": str(home / "faust"),
        "AGENTLOG_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "AGENTLOG_POSTGRES_DSN": stack.postgres_dsn,
        "AGENTLOG_ELASTICSEARCH_URL": stack.elasticsearch_url,
        "AGENTLOG_REDIS_URL": stack.redis_url,
        "AGENTLOG_MAX_STEPS": str(MAX_STEPS),
        "AGENTLOG_PROCESSOR_WORKERS": str(workers),
        "AGENTLOG_LLM_MODEL": "bench-canned",
        "OPENAI_BASE_URL": ctx.llm_url,
        "OPENAI_API_KEY": "bench",
    }
    settings = Settings(
        topic_prefix=prefix,
        es_index_prefix=env["AGENTLOG_ES_INDEX_PREFIX"],
        api_port=int(env["AGENTLOG_API_PORT"]),
        registry_port=int(env["AGENTLOG_REGISTRY_PORT"]),
        kafka_bootstrap=stack.kafka_bootstrap,
        postgres_dsn=stack.postgres_dsn,
        elasticsearch_url=stack.elasticsearch_url,
        redis_url=stack.redis_url,
    )
    with (home / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    platform = Platform(settings=settings, process=process, home=home, workers=workers)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    url = f"http://{settings.api_host}:{settings.api_port}/healthz"
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200 and _in_thread(
                _group_is_stable(settings, f"{prefix}-processor", workers)
            ):
                return platform
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    platform.stop()
    raise RuntimeError(f"agentlog serve did not become healthy:\n{platform.logs_tail()}")


def _in_thread(coroutine: Coroutine[Any, Any, bool]) -> bool:
    """Run a coroutine to completion from sync code that may itself be inside an event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _group_is_stable(settings: Settings, group: str, members: int) -> bool:
    """Every processor worker has joined its consumer group: no rebalance will land mid-run."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    _, _, state, _, _, joined = described[0].groups[0]
    return bool(state == "Stable" and len(joined) == members)


@dataclass
class TaskClient:
    """Submits bench tasks and waits until each is completed in the Postgres read model."""

    settings: Settings
    steps: int = 5
    events_per_task: list[int] = field(default_factory=list)
    visible_ms: list[float] = field(default_factory=list)  # submit acked -> task row committed
    _waiters: dict[str, asyncio.Future[tuple[str, int]]] = field(default_factory=dict)
    _seen: dict[str, asyncio.Future[float]] = field(default_factory=dict)

    async def __aenter__(self) -> TaskClient:
        self._registry = RegistryClient(self.settings.schema_registry_url)
        await self._registry.wait_until_ready()
        self._producer = EventProducer(self.settings, EventCodec(self._registry), source="/agentlog/bench")
        await self._producer.start()
        self._listen = await psycopg.AsyncConnection.connect(self.settings.postgres_dsn, autocommit=True)
        await self._listen.execute(f"LISTEN {TASK_CHANNEL}")
        self._listener = asyncio.create_task(self._dispatch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._listener.cancel()
        await self._listen.close()
        await self._producer.stop()
        await self._registry.close()

    async def _dispatch(self) -> None:
        async for notify in self._listen.notifies():
            task_id, status, _last_sequence, event_count = notify.payload.split(" ")
            seen = self._seen.get(task_id)
            if seen is not None and not seen.done():
                seen.set_result(time.perf_counter())
            waiter = self._waiters.get(task_id)
            if waiter is not None and not waiter.done() and status in ("completed", "failed"):
                waiter.set_result((status, int(event_count)))

    async def run_one(self, number: int) -> None:
        """Submit one task and return when its completed row is committed; fail loudly otherwise."""
        task_id = str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[str, int]] = loop.create_future()
        seen: asyncio.Future[float] = loop.create_future()
        self._waiters[task_id] = waiter
        self._seen[task_id] = seen
        stamped = submission(
            task_id=task_id,
            org_id="bench",
            user_id="bench",
            payload=TaskSubmitted(query=task_query(self.steps, number)),
            now=datetime.now(UTC),
            producer="agentlog-bench",
            producer_version="0.1.0",
        )
        try:
            submitted = time.perf_counter()
            await self._producer.publish(REQUESTS.name(self.settings), [stamped])
            status, event_count = await asyncio.wait_for(waiter, TASK_TIMEOUT_S)
            self.visible_ms.append((await seen - submitted) * 1000)
        finally:
            del self._waiters[task_id]
            del self._seen[task_id]
        if status != "completed":
            raise RuntimeError(f"bench task {task_id} ended {status}")
        self.events_per_task.append(event_count)
