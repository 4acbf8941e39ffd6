"""Shared fixtures of the data-path benches: realistic task histories, a throwaway schema registry,
fast backlogs, isolated Postgres schemas / Elasticsearch prefixes, the real projector processes,
and cleanup of everything a section created.

Histories are produced by the platform's own pure code (``decide`` -> ``stamp`` -> ``evolve``), so
sequences, event ids and the SHA-256 hash chain are exactly what the processor would write. For
backlogs of a million events, running the decider per event would cost minutes of untimed set-up,
so :func:`clone_records` re-targets a decider-built template to a new task id by substituting
fixed-length strings in the Avro bodies (task id, event ids, prev_hash) and re-hashing; the result
is byte-identical to what the decider writes for that task id, which :func:`templates` checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from aiokafka.admin import AIOKafkaAdminClient
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import AsyncElasticsearch
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.context import REPO, BenchContext
from processors.task.decider import (
    Command,
    RecordModelFailure,
    RecordModelResponse,
    RecordPolicyDecision,
    RecordToolResult,
    StartTask,
    TaskState,
    ToolCall,
    decide,
    evolve,
)
from processors.task.history import EVENT_ID_NAMESPACE, stamp, submission
from schemas.codec import EventCodec
from schemas.events import Event, Priority, TaskSubmitted
from schemas.registry.app import create_app as registry_app
from schemas.registry.client import RegistryClient
from schemas.serde import frame
from streams.admin import ensure_topics
from streams.headers import event_headers
from streams.settings import Settings
from streams.topics import CATALOGUE, EVENTS, REQUESTS

API = ("agentlog-api", "0.1.0")  # who stamps submissions (api/routes/tasks.py)
PROCESSOR = ("agentlog-processor", "0.1.0")  # who stamps everything else (processors/task/runner.py)
MODEL = "gpt-4o-mini"
MODEL_VERSION = "gpt-4o-mini-2024-07-18"
PROVIDER = "openai-compatible"

# -- task histories -------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskShape:
    """What a task does: ``steps`` model calls that call tools, then a final answer (or a failure)."""

    steps: int = 3
    tools_per_step: int = 1
    outcome: str = "completed"  # "completed", "tool_error" (first tool call fails, task goes on), "llm_error"
    max_steps: int = 8
    short_call_ids: bool = False  # "c<step>_<i>" instead of OpenAI's 29-character "call_..." ids


@dataclass
class TaskHistory:
    """One task's events as the platform writes them: one inner list per ``publish`` call."""

    task_id: str
    decisions: list[list[tuple[Event, bytes]]]
    status: str  # final read-model status: "completed" or "failed"

    @property
    def events(self) -> list[tuple[Event, bytes]]:
        return [stamped for decision in self.decisions for stamped in decision]


def _response_json(number: int, step: int, content: str | None, calls: Sequence[ToolCall]) -> str:
    """An OpenAI chat-completion as ``ChatCompletion.model_dump_json()`` renders it (LlmCallCompleted)."""
    message: dict[str, Any] = {
        "content": content,
        "refusal": None,
        "role": "assistant",
        "annotations": [],
        "audio": None,
        "function_call": None,
        "tool_calls": [
            {"id": c.id, "function": {"arguments": c.arguments_json, "name": c.name}, "type": "function"}
            for c in calls
        ]
        or None,
    }
    body = {
        "id": f"chatcmpl-{hashlib.sha1(f'{number}/{step}'.encode()).hexdigest()[:29]}",
        "choices": [
            {
                "finish_reason": "tool_calls" if calls else "stop",
                "index": 0,
                "logprobs": None,
                "message": message,
            }
        ],
        "created": 1767000000 + number,
        "model": MODEL_VERSION,
        "object": "chat.completion",
        "service_tier": "default",
        "system_fingerprint": "fp_560af6e559",
        "usage": {
            "completion_tokens": 18,
            "prompt_tokens": 96 + 40 * step,
            "total_tokens": 114 + 40 * step,
            "completion_tokens_details": {"accepted_prediction_tokens": 0, "reasoning_tokens": 0},
            "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
        },
    }
    return json.dumps(body, separators=(",", ":"))


def build_task(task_id: str, number: int, shape: TaskShape, *, started: datetime) -> TaskHistory:
    """Run the pure decider through a whole task (no LLM, no tools: their answers are made up here).

    Deterministic in (number, shape, started): only ids derived from ``task_id`` differ between two
    tasks built from the same arguments, which :func:`clone_records` relies on.
    """
    rng = random.Random(number)
    a, b, c = rng.randint(10, 999), rng.randint(10, 999), rng.randint(2, 9)
    submitted, body = submission(
        task_id=task_id,
        org_id=f"org-{number % 7}",
        user_id=f"user-{number % 97}",
        payload=TaskSubmitted(
            query=f"What is ({a} + {b}) * {c}, using the calculator for each step (task {number})?",
            context={"channel": "api", "locale": "en-GB"},
            priority=Priority.NORMAL,
            session_id=f"session-{number % 500}",
        ),
        now=started,
        producer=API[0],
        producer_version=API[1],
    )
    state = evolve(TaskState(), submitted)
    history = TaskHistory(task_id=task_id, decisions=[[(submitted, body)]], status="completed")
    clock = started

    def run(command: Command, elapsed_ms: int) -> None:
        nonlocal state, clock
        clock += timedelta(milliseconds=elapsed_ms)
        payloads = decide(command, state)
        if not payloads:
            raise AssertionError(f"the decider ignored {type(command).__name__} in task {task_id}")
        stamped = stamp(state, payloads, now=clock, producer=PROCESSOR[0], producer_version=PROCESSOR[1])
        for event, _ in stamped:
            state = evolve(state, event)
        history.decisions.append(stamped)

    run(
        StartTask(
            provider=PROVIDER, model=MODEL, offline=False, max_steps=shape.max_steps, tools=("calculator",)
        ),
        40,
    )
    for step in range(1, shape.steps + 1):
        pending = state.main.pending_llm
        if pending is None:
            raise AssertionError("no pending LLM call")
        if shape.outcome == "llm_error" and step == shape.steps:
            run(
                RecordModelFailure(
                    idempotency_key=pending.idempotency_key,
                    error_type="RateLimitError",
                    error="Error code: 429 - Rate limit reached for gpt-4o-mini in organization org-x",
                    latency_ms=212.4,
                ),
                212,
            )
            history.status = "failed"
            return history
        calls = tuple(
            ToolCall(
                id=f"c{step}_{i}"
                if shape.short_call_ids
                else f"call_{hashlib.sha1(f'{number}/{step}/{i}'.encode()).hexdigest()[:24]}",
                name="calculator",
                arguments_json=json.dumps({"expression": f"{a + step} * {c + i}"}),
            )
            for i in range(shape.tools_per_step)
        )
        run(
            RecordModelResponse(
                idempotency_key=pending.idempotency_key,
                model=MODEL_VERSION,
                content=None,
                tool_calls=calls,
                finish_reason="tool_calls",
                prompt_tokens=96 + 40 * step,
                completion_tokens=18,
                latency_ms=843.7 + step,
                response_json=_response_json(number, step, None, calls),
            ),
            850,
        )
        requests = [call.request for call in state.main.tools]
        for request in requests:
            # The default policy's rule for the calculator, as the processor records it.
            run(
                RecordPolicyDecision(
                    idempotency_key=request.idempotency_key, effect="allow", rule="calculator-everyone"
                ),
                0,
            )
        for i, request in enumerate(requests):
            failing = shape.outcome == "tool_error" and step == 1 and i == 0
            run(
                RecordToolResult(
                    idempotency_key=request.idempotency_key,
                    output="" if failing else str((a + step) * (c + i)),
                    error_type="CalculatorError" if failing else None,
                    error="unsupported expression: name 'x' is not defined" if failing else None,
                    latency_ms=0.21,
                ),
                2,
            )
    pending = state.main.pending_llm
    if pending is None:
        raise AssertionError("no pending LLM call for the final answer")
    answer = f"({a} + {b}) * {c} = {(a + b) * c}. I used the calculator for each step."
    run(
        RecordModelResponse(
            idempotency_key=pending.idempotency_key,
            model=MODEL_VERSION,
            content=answer,
            finish_reason="stop",
            prompt_tokens=260,
            completion_tokens=31,
            latency_ms=911.2,
            response_json=_response_json(number, shape.steps + 1, answer, ()),
        ),
        920,
    )
    return history


# The mix of task shapes of the projection / rebuild backlogs: 13-23 events a task, some failures.
SHAPES: tuple[TaskShape, ...] = (
    TaskShape(steps=2),
    TaskShape(steps=3),
    TaskShape(steps=3),
    TaskShape(steps=4),
    TaskShape(steps=2, tools_per_step=2),
    TaskShape(steps=3, outcome="tool_error"),
    TaskShape(steps=3),
    TaskShape(steps=2, outcome="llm_error"),
)


def long_task(task_id: str, events: int, *, started: datetime) -> list[tuple[Event, bytes]]:
    """The first ``events`` events of one long-running task (a valid prefix: a task still in flight).

    50 parallel tool calls per step (short call ids) keep a 10,000-event history at ~70 steps, so the
    fold exercises wide steps as well as long conversations.
    """
    tools = 50
    steps = events // (3 * tools + 2) + 1
    history = build_task(
        task_id,
        0,
        TaskShape(steps=steps, tools_per_step=tools, max_steps=steps + 1, short_call_ids=True),
        started=started,
    )
    flat = history.events
    if len(flat) < events:
        raise AssertionError(f"long task has {len(flat)} events, wanted {events}")
    return flat[:events]


# -- records: histories as Kafka records, and fast cloning ------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One event as a Kafka record, unframed (the schema id depends on the topic)."""

    kind: str  # "requests" (TaskSubmitted) or "events"
    fullname: str
    key: bytes
    body: bytes  # the Avro body whose SHA-256 is the event's digest
    headers: list[tuple[str, bytes]]


def records_of(stamped: Iterable[tuple[Event, bytes]]) -> list[Record]:
    """The records the platform writes for a task's events (the submission on the requests topic,
    the rest on the events topic), with one trace for the whole task as the processor continues it."""
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    return [
        Record(
            kind="requests" if event.event_type == "TaskSubmitted" else "events",
            fullname=event.payload.fullname(),
            key=event.task_id.encode(),
            body=body,
            headers=event_headers(
                event, source=f"/agentlog/{event.envelope.producer}", traceparent=traceparent
            ),
        )
        for event, body in stamped
    ]


_HEADER_ORDER = (
    "ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "ce_subject", "content-type", "traceparent",
)  # fmt: skip


@dataclass
class Template:
    """A decider-built task whose records :func:`clone_records` re-targets to other task ids."""

    history: TaskHistory
    records: list[Record]
    event_ids: list[bytes] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)

    @classmethod
    def of(cls, history: TaskHistory) -> Template:
        records = records_of(history.events)
        if [name for name, _ in records[0].headers] != list(_HEADER_ORDER):
            raise AssertionError("streams.headers.event_headers changed; update clone_records")
        return cls(
            history=history,
            records=records,
            event_ids=[str(e.envelope.event_id).encode() for e, _ in history.events],
            digests=[e.digest.encode() for e, _ in history.events],
        )


def _event_id(task_id: str, sequence: int) -> bytes:
    """``processors.task.history.event_id_for`` as bytes, without building a UUID object (hot loop)."""
    raw = bytearray(hashlib.sha1(EVENT_ID_NAMESPACE.bytes + f"{task_id}/{sequence}".encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()


def clone_records(template: Template, task_id: str) -> Iterator[Record]:
    """``template``'s records for ``task_id``: new task id, event ids, causation ids and hash chain.

    All substituted values have a fixed length (uuid strings, hex SHA-256), so the Avro length
    prefixes stay valid and the bodies are what ``stamp`` would have encoded for ``task_id``.
    """
    old_task, new_task = template.history.task_id.encode(), task_id.encode()
    if len(old_task) != len(new_task):
        raise ValueError("clone task ids must have the template's length")
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode()
    prev_old_id = prev_new_id = prev_old_digest = prev_new_digest = b""
    for sequence, record in enumerate(template.records):
        old_id = template.event_ids[sequence]
        new_id = _event_id(task_id, sequence)
        body = record.body.replace(old_task, new_task).replace(old_id, new_id)
        if sequence:
            body = body.replace(prev_old_id, prev_new_id).replace(prev_old_digest, prev_new_digest)
        # event_headers() order: ce_specversion, ce_id, ce_type, ce_source, ce_time, ce_subject,
        # content-type, traceparent; only the ids and the trace differ between clones.
        headers = list(record.headers)
        headers[1] = ("ce_id", new_id)
        headers[5] = ("ce_subject", new_task)
        headers[7] = ("traceparent", traceparent)
        yield Record(record.kind, record.fullname, new_task, body, headers)
        prev_old_id, prev_new_id = old_id, new_id
        prev_old_digest, prev_new_digest = (
            template.digests[sequence],
            hashlib.sha256(body).hexdigest().encode(),
        )


def templates(count: int = 32, *, started: datetime | None = None) -> list[Template]:
    """``count`` decider-built tasks cycling through :data:`SHAPES`; the cloning is checked on one."""
    started = started or datetime.now(UTC).replace(microsecond=0)
    built = [
        Template.of(build_task(str(uuid.uuid4()), n, SHAPES[n % len(SHAPES)], started=started))
        for n in range(count)
    ]
    probe_id = str(uuid.uuid4())
    direct = records_of(build_task(probe_id, 0, SHAPES[0], started=started).events)
    cloned = list(clone_records(built[0], probe_id))
    if [(r.body, r.headers[:7]) for r in direct] != [(r.body, r.headers[:7]) for r in cloned]:
        raise AssertionError("cloned task records differ from what the decider writes for that task id")
    return built


@dataclass
class Backlog:
    """What a generated backlog holds, to check a projection against."""

    events: int = 0
    tasks: int = 0
    requests: int = 0  # records on the requests topic (one TaskSubmitted per task)
    statuses: dict[str, int] = field(default_factory=dict)
    task_ids: list[str] = field(default_factory=list)


def backlog_records(tmpls: Sequence[Template], events: int, backlog: Backlog) -> Iterator[Record]:
    """Whole tasks cloned round-robin from ``tmpls`` until at least ``events`` events, interleaved
    across 64 tasks in flight (so partitions and batches mix tasks as live traffic does)."""
    in_flight: list[Iterator[Record]] = []
    number = 0
    while True:
        while len(in_flight) < 64 and backlog.events < events:
            template = tmpls[number % len(tmpls)]
            task_id = str(uuid.uuid4())
            in_flight.append(clone_records(template, task_id))
            backlog.tasks += 1
            backlog.events += len(template.records)
            backlog.requests += 1
            backlog.statuses[template.history.status] = backlog.statuses.get(template.history.status, 0) + 1
            if len(backlog.task_ids) < 1000:
                backlog.task_ids.append(task_id)
            number += 1
        if not in_flight:
            return
        still = []
        for records in in_flight:
            record = next(records, None)
            if record is not None:
                yield record
                still.append(records)
        in_flight = still


# -- the throwaway platform pieces -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def section_settings(ctx: BenchContext, section: str) -> Settings:
    """The stack's endpoints with a topic / index prefix no one else uses."""
    prefix = ctx.prefix(section)
    return ctx.settings.model_copy(
        update={"topic_prefix": prefix, "es_index_prefix": f"{prefix}-audit", "registry_url": None}
    )


@contextlib.asynccontextmanager
async def registry(settings: Settings) -> AsyncIterator[Settings]:
    """The platform's schema registry app, served in this process on a free port.

    It stores schemas on ``<prefix>.schemas`` like the real one; the topics of the catalogue are
    created first (``streams.admin.ensure_topics``, as ``agentlog prepare`` does). Yields the
    settings pointing at it.
    """
    port = free_port()
    settings = settings.model_copy(update={"registry_port": port, "registry_url": f"http://127.0.0.1:{port}"})
    await ensure_topics(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            registry_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    # uvicorn would otherwise take over SIGINT/SIGTERM of the whole bench process.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    serving = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if serving.done() or time.monotonic() > deadline:
                raise RuntimeError("the in-process schema registry did not start")
            await asyncio.sleep(0.02)
        yield settings
    finally:
        server.should_exit = True
        await serving


@dataclass
class Codec:
    """The platform's codec against a registry, with the frames (magic + id) of every topic/record."""

    codec: EventCodec
    client: RegistryClient
    frames: dict[tuple[str, str], bytes] = field(default_factory=dict)

    async def prepare(self, topic: str, fullnames: Iterable[str]) -> None:
        for fullname in fullnames:
            self.frames[(topic, fullname)] = frame(await self.codec.schema_id(topic, fullname), b"")


@contextlib.asynccontextmanager
async def codec(settings: Settings) -> AsyncIterator[Codec]:
    client = RegistryClient(settings.schema_registry_url)
    try:
        await client.wait_until_ready()
        yield Codec(EventCodec(client), client)
    finally:
        await client.close()


def topic_names(settings: Settings) -> dict[str, str]:
    return {"requests": REQUESTS.name(settings), "events": EVENTS.name(settings)}


async def prepare_frames(settings: Settings, c: Codec) -> None:
    """Register every task record under both task topics (what the producers do on first use)."""
    names = topic_names(settings)
    await c.prepare(names["requests"], ["agentlog.events.TaskSubmitted"])
    await c.prepare(names["events"], [n for n in EVENTS.event_types])


def produce_fast(
    settings: Settings,
    frames: dict[tuple[str, str], bytes],
    records: Iterable[Record],
    *,
    topics: dict[str, str] | None = None,
) -> int:
    """Write ``records`` with confluent-kafka (acks=all, idempotent) as fast as it goes; blocking.

    Untimed set-up for backlogs: the records are the ones the platform would write, only the
    producer is faster than the platform's. Raises if any record was not acknowledged.
    """
    topics = topics or topic_names(settings)
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            # The Java client's (and aiokafka's) key hash, so each task lands on the partition the
            # platform's producer would pick (librdkafka's default is CRC32).
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
        }
    )
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    sent = 0
    for record in records:
        topic = topics[record.kind]
        value = frames[(topic, record.fullname)] + record.body
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=record.key,
                    headers=record.headers,  # type: ignore[arg-type]  # list is invariant; bytes values are fine
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        if sent % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or failures:
        raise RuntimeError(f"backlog production failed: {remaining} unacknowledged, errors {failures[:3]}")
    return sent


def kafka_admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 3})


def create_topic(settings: Settings, name: str, partitions: int) -> None:
    admin = kafka_admin(settings)  # must outlive the futures: a collected client cancels them
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        future.result(30)


def delete_kafka(settings: Settings, *, topics: Sequence[str] = (), groups: Sequence[str] = ()) -> None:
    """Delete topics and consumer groups a section created (best effort: never hides a result)."""
    admin = kafka_admin(settings)
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [t for t in topics if t in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(30)
    if groups:
        for future in admin.delete_consumer_groups(list(groups), request_timeout=15).values():
            with contextlib.suppress(Exception):
                future.result(15)


def catalogue_topics(settings: Settings) -> list[str]:
    return [spec.name(settings) for spec in CATALOGUE]


@contextlib.asynccontextmanager
async def pg_database(settings: Settings, name: str) -> AsyncIterator[str]:
    """A fresh Postgres database on the stack's server; yields its DSN, drops it afterwards.

    A database rather than a schema on ``search_path``: the projector's pool passes its own libpq
    ``options`` (synchronous_commit=off, projections/runner.py), which replace any ``options`` in
    the DSN, so a search_path there would be silently dropped and the rows land in ``public``.
    """
    async with await psycopg.AsyncConnection.connect(settings.postgres_dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(settings.postgres_dsn, dbname=name)
    finally:
        # Plain DROP: Postgres stops an autovacuum worker on the new tables by itself, while
        # WITH (FORCE) would need the right to signal that (superuser) worker and fail.
        async with await psycopg.AsyncConnection.connect(settings.postgres_dsn, autocommit=True) as conn:
            for _ in range(30):
                try:
                    await conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
                    break
                except psycopg.errors.ObjectInUse:
                    await asyncio.sleep(1)  # a child we stopped is still closing its connections
            else:
                await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


async def delete_es(settings: Settings) -> None:
    """Remove the audit indices and index template of ``settings.es_index_prefix``."""
    prefix = settings.es_index_prefix
    async with AsyncElasticsearch(settings.elasticsearch_url, request_timeout=30) as client:
        found = await client.indices.get(index=f"{prefix}-*", allow_no_indices=True, expand_wildcards="all")
        for index in found:
            await client.indices.delete(index=index)
        with contextlib.suppress(Exception):
            await client.indices.delete_index_template(name=prefix)


class Component:
    """One platform component (``agentlog run <component>``, as ``agentlog serve`` starts it) in a
    child process with the bench's settings, logging to a temporary file."""

    def __init__(self, component: str, settings: Settings, *, postgres_dsn: str | None = None) -> None:
        self.component = component
        self.env = {
            **os.environ,
            "AGENTLOG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "AGENTLOG_TOPIC_PREFIX": settings.topic_prefix,
            "AGENTLOG_REGISTRY_URL": settings.schema_registry_url,
            "AGENTLOG_POSTGRES_DSN": postgres_dsn or settings.postgres_dsn,
            "AGENTLOG_ELASTICSEARCH_URL": settings.elasticsearch_url,
            "AGENTLOG_ES_INDEX_PREFIX": settings.es_index_prefix,
        }
        self.log = Path(tempfile.mkstemp(prefix=f"bench-{component}-", suffix=".log")[1])
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "api.cli", "run", self.component,
                env=self.env, cwd=REPO, stdout=log, stderr=log,
            )  # fmt: skip

    def check(self) -> None:
        """Raise (with the log's tail) if the component died."""
        if self.process is not None and self.process.returncode is not None:
            raise RuntimeError(f"{self.component} exited {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.log.unlink(missing_ok=True)


# -- measuring a projector ---------------------------------------------------------------------


@dataclass
class Drain:
    """A projector catching up with a backlog, seen through its durable progress (offsets)."""

    total: int  # records it had to consume
    first: int  # records already done at the first progress seen (its first batch)
    seconds: float  # first progress seen -> all done
    startup_s: float  # process start -> first progress (imports, migrations, group join, 1st batch)

    @property
    def events_per_s(self) -> float:
        """Steady catch-up rate: what was done after the first batch over the time it took."""
        return (self.total - self.first) / self.seconds if self.seconds > 0 else float("nan")


async def watch_drain(
    progress: Any,
    total: int,
    component: Component,
    *,
    timeout: float,
    interval: float = 0.02,
    stall_s: float = 60.0,
) -> Drain:
    """Poll ``progress()`` (records durably done) until it reaches ``total``; fail loudly otherwise."""
    started = moved = time.perf_counter()
    first_at: float | None = None
    first = done = 0
    while True:
        component.check()
        before, done = done, await progress()
        now = time.perf_counter()
        if done and first_at is None:
            first_at, first = now, done
        if done >= total:
            break
        if done != before:
            moved = now
        if now - started > timeout or now - moved > stall_s:
            raise TimeoutError(
                f"{component.component}: {done} of {total} records after {now - started:.0f} s, "
                f"no progress for {now - moved:.0f} s; its log:\n{component.tail()}"
            )
        await asyncio.sleep(interval)
    if done != total or first_at is None:
        raise AssertionError(f"{component.component} consumed {done} records, {total} were produced")
    return Drain(total=total, first=first, seconds=now - first_at, startup_s=first_at - started)


class PostgresProgress:
    """Records the Postgres projector has committed: its stored next offsets (the topics start at 0)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def __call__(self) -> int:
        if self._conn is None:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        cursor = await self._conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM projection_offsets WHERE projector = 'postgres'"
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


class GroupProgress:
    """Records a consumer group has committed on ``topics`` (the Elasticsearch projector commits
    only after its bulk request succeeded, so this is its durable progress)."""

    def __init__(self, settings: Settings, group: str, topics: Sequence[str]) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        self._group = group
        self._topics = set(topics)
        self._started = False

    async def __call__(self) -> int:
        if not self._started:
            await self._admin.start()
            self._started = True
        offsets = await self._admin.list_consumer_group_offsets(self._group)
        return sum(max(0, meta.offset) for tp, meta in offsets.items() if tp.topic in self._topics)

    async def close(self) -> None:
        if self._started:
            await self._admin.close()


async def end_offsets(settings: Settings, topics: Sequence[str]) -> dict[str, int]:
    """Records on each topic (sum of the partitions' high watermarks; the bench's topics start at 0)."""

    def read() -> dict[str, int]:
        consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-watermarks"})
        try:
            totals = {}
            for topic in topics:
                metadata = consumer.list_topics(topic, timeout=10).topics[topic]
                if metadata.error is not None:
                    raise RuntimeError(f"topic {topic}: {metadata.error}")
                totals[topic] = sum(
                    consumer.get_watermark_offsets(CTopicPartition(topic, p), timeout=10)[1]
                    for p in metadata.partitions
                )
            return totals
        finally:
            consumer.close()

    return await asyncio.to_thread(read)
