"""The task processor: a faust agent on the requests topic around :class:`TaskRunner`.

Per record: decode (Confluent wire format, registry schemas) -> dedupe against the task's state in
a changelog-backed table -> run the agent loop -> state saved after every decision. A record that
cannot be decoded, or whose handling raises, is dead-lettered with its position and the partition
keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from typing import Any

import faust
import mode.loop

from processors.llm.gateway import LlmGateway
from processors.task.decider import TERMINAL, TaskState, evolve
from processors.task.runner import TaskRunner
from processors.task.states import TaskStates
from schemas.codec import EventCodec
from schemas.events import TaskSubmitted
from schemas.registry.client import RegistryClient, RegistryUnavailable
from streams.faust_app import create_app
from streams.headers import header_map
from streams.producer import EventProducer
from streams.settings import Settings, get_settings
from streams.topics import EVENTS, REQUESTS, TASK_STATE

log = logging.getLogger(__name__)

CONSUMER = "agentlog-processor/task-runner"


def app_id(settings: Settings) -> str:
    """faust app id (= consumer group and table-topic prefix), unique per topic prefix."""
    return f"{settings.topic_prefix}-processor"


class NotASubmissionError(ValueError):
    """A decodable event on the requests topic that is not a TaskSubmitted."""


class _Resources:
    """Clients the agent needs, started once per worker process on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = RegistryClient(settings.schema_registry_url)
        self.codec = EventCodec(self.registry)
        self.producer = EventProducer(settings, self.codec, source=f"/agentlog/{app_id(settings)}")
        self.gateway = LlmGateway(settings)
        self.runner = TaskRunner(
            producer=self.producer,
            events_topic=EVENTS.name(settings),
            state_topic=TASK_STATE.name(settings),
            gateway=self.gateway,
            max_steps=settings.max_steps,
        )
        self._started = False
        self._lock = asyncio.Lock()

    async def ensure_started(self, states: TaskStates) -> None:
        async with self._lock:
            if not self._started:
                await self.registry.wait_until_ready()
                await self.producer.start()
                # Before the first submission is handled: redeliveries must see finished tasks.
                await states.load(
                    self.settings.kafka_bootstrap,
                    TASK_STATE.name(self.settings),
                    TASK_STATE.partition_count(self.settings),
                    self.codec,
                )
                self._started = True


def _header_list(headers: Any) -> list[tuple[str, bytes]]:
    """faust hands headers as a list of pairs or as a mapping, depending on the source."""
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers or [])


def build_app(settings: Settings | None = None) -> faust.App:
    settings = settings or get_settings()
    app = create_app(settings, app_id=app_id(settings))
    requests = app.topic(REQUESTS.name(settings), key_type=bytes, value_type=bytes)
    states = TaskStates()
    resources = _Resources(settings)
    in_flight: set[str] = set()

    async def handle(submission_bytes: bytes | None, headers: dict[str, str]) -> None:
        event = await resources.codec.decode(submission_bytes)
        if not isinstance(event.payload, TaskSubmitted):
            raise NotASubmissionError(f"{event.event_type} is not a task submission")
        task_id = event.task_id
        if task_id in in_flight:
            log.info("task %s already running in this worker; duplicate delivery ignored", task_id)
            return
        state = states.get(task_id) or TaskState()
        if state.status in TERMINAL:
            log.info("task %s already %s; duplicate delivery ignored", task_id, state.status)
            return
        in_flight.add(task_id)
        try:
            state = evolve(state, event)
            states.put(state)
            state = await resources.runner.run(state, states.put, traceparent=headers.get("traceparent"))
            log.debug("task %s ended %s after %d events", task_id, state.status, state.sequence + 1)
        finally:
            in_flight.discard(task_id)

    slots = asyncio.Semaphore(settings.worker_concurrency)

    async def process(stream: faust.StreamT[bytes], record: faust.EventT[bytes]) -> None:
        """Run one submission's task, then ack it: its offset is committed only once it is done."""
        message = record.message
        raw_headers = _header_list(message.headers)
        headers = header_map(raw_headers)
        try:
            await handle(record.value, headers)
        except RegistryUnavailable:
            # Infrastructure outage, not a bad record: crash so the supervisor restarts the
            # worker and the record is delivered again (at-least-once).
            log.critical("schema registry unavailable; stopping the worker")
            os.kill(os.getpid(), signal.SIGTERM)
            return
        except Exception as exc:
            log.exception("task record %s[%d]@%d failed", message.topic, message.partition, message.offset)
            await resources.producer.dead_letter(
                source_topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value,
                headers=raw_headers,
                error=exc,
                consumer=CONSUMER,
            )
        finally:
            slots.release()
        await stream.ack(record)

    # One record = one whole task, which takes many effect round trips; awaiting it inline would
    # let a partition advance one task at a time. So each submission runs as its own asyncio task
    # (at most worker_concurrency at once: the semaphore is the backpressure), and acks are manual
    # (faust commits an offset only when every record before it on the partition was acked).
    running: set[asyncio.Task[None]] = set()

    @app.agent(requests, concurrency=1)
    async def run_tasks(stream: faust.StreamT[bytes]) -> None:
        await resources.ensure_started(states)
        manual = stream.noack()  # type: ignore[attr-defined]  # on faust's Stream, not its StreamT protocol
        async for record in manual.events():
            await slots.acquire()
            task = asyncio.create_task(process(manual, record))
            running.add(task)
            task.add_done_callback(running.discard)

    return app


def main() -> None:
    """Run the processor worker in this process (``agentlog serve`` starts it as a child)."""
    # uvloop: every step of a task is a network round trip, so the loop's latency is the task's
    # latency (unloaded K = 5 task 96 -> 65 ms, docs/benchmarks.md).
    mode.loop.use("uvloop")
    settings = get_settings()
    app = build_app(settings)
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()
