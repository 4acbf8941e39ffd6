"""The task processor: a faust agent on the requests topic around :class:`TaskRunner`.

The requests topic carries submissions (``TaskSubmitted``) and requests to running tasks
(``CancellationRequested``, ``ApprovalDecided``), keyed by task id so a task's records reach one
worker in order. Per record: decode (Confluent wire format, registry schemas) -> dedupe against the
task's state (loaded from the compacted task-state topic for each partition as it is assigned) ->
schedule: submissions wait in a :class:`Scheduler` (priorities with headroom for HIGH, delayed
starts off the slots); a request goes to the inbox of the task's running loop, or wakes a task
that waits for a human decision.

A record is acknowledged when the run it started has ended (the task completed, failed, was
cancelled, or waits durably for an approval), so a worker that dies mid-task gets the record again
and resumes the task from its checkpoint. When partitions are revoked (a rebalance, or SIGTERM)
the runs of their tasks are stopped unacknowledged, so exactly one worker runs a task at a time and
the new owner resumes it. A record that cannot be decoded, or whose handling raises, is
dead-lettered with its position and the partition keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, NoReturn

import faust
import mode.loop
from aiokafka.errors import KafkaError, KafkaTimeoutError
from faust.types import TP

from audit.fork import ForkError, check_fork, copy_prefix
from processors.task.commands import CancelTask, Command, DecideApproval, ForkTask
from processors.task.decider import RETRY_EXHAUSTED, evolve, fold
from processors.task.interpreters import build_runner
from processors.task.recovery import reconcile
from processors.task.runner import TaskRunner, utc_now
from processors.task.scheduler import Scheduler
from processors.task.state import TERMINAL, Status, TaskState
from processors.task.states import TaskStates
from schemas.codec import EventCodec
from schemas.events import Event, Priority, TaskSubmitted
from schemas.registry.client import RegistryClient, RegistryUnavailable
from schemas.requests import ApprovalDecided, CancellationRequested, TaskForkRequested, TaskRequest
from streams import tracing
from streams.acks import InOrderAcks
from streams.faust_app import create_app
from streams.headers import header_map
from streams.history import partition_for, read_task_events
from streams.logs import bind_task, task_context
from streams.producer import EventProducer
from streams.settings import Settings, get_settings
from streams.topics import EVENTS, REQUESTS, TASK_STATE
from streams.tracing import traceparent_from

log = logging.getLogger(__name__)

CONSUMER = "agentlog-processor/task-runner"
# Exit status of a worker that stops itself because a service it needs is away (EX_TEMPFAIL).
OUTAGE_EXIT_STATUS = 75


def is_outage(exc: BaseException) -> bool:
    """True for an error that says a service is away (the registry, or Kafka past its retries), not
    that the record is bad: the record must be delivered again later, never dead-lettered."""
    if isinstance(exc, RegistryUnavailable | KafkaTimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)


def stop_for_outage(exc: BaseException) -> NoReturn:
    """Ends the worker process at once, for the supervisor to restart once the service is back.

    Not a graceful stop: faust's stop waits until every record taken is acknowledged, and a record is
    acknowledged only when its task's run ends, which the outage prevents; the worker hung there for
    minutes, in the consumer group, until killed. Exiting is what ``kill -9`` does, which
    tests/faults/test_worker_crash.py shows loses nothing: unacknowledged records come again and
    each task resumes from its checkpoint.
    """
    log.critical("stopping the worker: %s: %s", type(exc).__name__, exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(OUTAGE_EXIT_STATUS)


def app_id(settings: Settings) -> str:
    """faust app id (= consumer group), unique per topic prefix."""
    return f"{settings.topic_prefix}-processor"


class NotASubmissionError(ValueError):
    """A decodable task event on the requests topic that is not a TaskSubmitted."""


class UnknownTaskError(LookupError):
    """A request names a task this worker has never seen submitted."""


def command_of(request: TaskRequest) -> Command:
    """The decider command a request from outside stands for."""
    match request:
        case CancellationRequested():
            return CancelTask(reason=request.reason, cancelled_by=request.header.user_id)
        case ApprovalDecided():
            return DecideApproval(
                approval_id=request.approval_id,
                approved=request.approved,
                decided_by=request.header.user_id,
                reason=request.reason,
            )
    raise TypeError(f"no command for request {type(request).__name__}")


@dataclass
class _Run:
    """A task's pending or running loop and the records it will acknowledge when it ends."""

    task_id: str
    priority: Priority
    submission: Event | None = None
    commands: list[Command] = field(default_factory=list)
    records: list[faust.EventT[bytes]] = field(default_factory=list)
    traceparent: str | None = None
    inbox: asyncio.Queue[Command] = field(default_factory=asyncio.Queue)
    started: bool = False
    delayed: bool = False  # queued without a read-ahead place
    fork: TaskForkRequested | None = None  # a new task to start as a copy of another's prefix
    task: asyncio.Task[None] | None = None  # once started
    revoked: bool = False  # its partition went away: stop, acknowledge nothing


@dataclass
class _Ownership:
    """The requests-topic partitions assigned to this worker, those whose task states are loaded,
    and a generation counted up at each revocation (a wait that spans one is void)."""

    assigned: set[int] = field(default_factory=set)
    loaded: set[int] = field(default_factory=set)
    generation: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


def _partition_of(run: _Run, settings: Settings) -> int:
    if run.records:
        return int(run.records[0].message.partition)
    return partition_for(run.task_id, REQUESTS.partition_count(settings))


class _Resources:
    """Clients the agent needs, started once per worker process on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = RegistryClient(settings.schema_registry_url)
        self.codec = EventCodec(self.registry)
        self.producer = EventProducer(settings, self.codec, source=f"/agentlog/{app_id(settings)}")
        self.runner: TaskRunner = build_runner(settings, self.producer)
        self._started = False
        self._lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        async with self._lock:
            if not self._started:
                await self.registry.wait_until_ready()
                await self.producer.start()
                self._started = True


def _header_list(headers: Any) -> list[tuple[str, bytes]]:
    """faust hands headers as a list of pairs or as a mapping, depending on the source."""
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers or [])


def build_app(settings: Settings | None = None) -> faust.App:
    settings = settings or get_settings()
    app = create_app(settings, app_id=app_id(settings))
    requests_topic = app.topic(REQUESTS.name(settings), key_type=bytes, value_type=bytes)
    states = TaskStates()
    resources = _Resources(settings)
    scheduler: Scheduler[_Run] = Scheduler(settings.worker_concurrency)
    runs: dict[str, _Run] = {}  # queued or running, by task id
    wake = asyncio.Event()
    # Read-ahead bound: records decoded and queued but not yet started (delayed ones excepted).
    queued = asyncio.Semaphore(settings.worker_concurrency * 4)
    stream_ref: dict[str, Any] = {}
    # Requests-topic partitions this worker owns and has loaded the task states of. A task's
    # requests and its checkpoints share a partition number (same key, same count). Another
    # worker may have run a partition's tasks while this one did not own it, so the states of
    # each assigned partition are read again before any of its records is handled: otherwise a
    # resubmission of a task finished elsewhere would run it again, and a request for a task
    # waiting elsewhere would find no task.
    owned = _Ownership()
    requests_name = REQUESTS.name(settings)
    # faust may commit past a record never acknowledged when acks come out of order (streams/acks.py).
    in_order: InOrderAcks[faust.EventT[bytes]] = InOrderAcks()

    async def on_assigned(_app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        assigned: set[TP] = args[0]  # faust sends (app, assigned)
        mine = {tp.partition for tp in assigned if tp.topic == requests_name}
        async with owned.changed:
            new = mine - owned.loaded
            owned.assigned = set(mine)
            owned.loaded.intersection_update(mine)
            owned.changed.notify_all()
        await resources.ensure_started()
        if new:
            await states.load(settings.kafka_bootstrap, TASK_STATE.name(settings), new, resources.codec)
        async with owned.changed:
            owned.loaded.update(mine)
            owned.changed.notify_all()

    async def abandon(lost: set[int]) -> None:
        """Stop every run of the ``lost`` partitions, acknowledging nothing, before they move.

        faust does not hold a rebalance until records acknowledged by hand are (a 70 s LLM call
        ran on while its partition moved, tests/faults/test_rebalance.py), and a run lasts as
        long as its task: left running, it would write the task's next events while the
        partition's new owner resumes the same task from its checkpoint (two writers, duplicate
        sequences). The
        records are delivered again to the owner, which resumes each task from its checkpoint
        (reconciled with the log); the effect that was in flight is performed once more under
        its idempotency key.
        """
        async with owned.changed:
            owned.generation += 1
            owned.assigned -= lost
            owned.loaded -= lost
            owned.changed.notify_all()
        in_order.forget(lost)
        stopping = [run for run in list(runs.values()) if _partition_of(run, settings) in lost]
        for run in stopping:
            run.revoked = True
            runs.pop(run.task_id, None)
        started = [run.task for run in stopping if run.task is not None and not run.task.done()]
        for task in started:
            task.cancel()
        await asyncio.gather(*started, return_exceptions=True)
        # What the stopped runs sent must be on the log before the new owner reads it.
        await resources.producer.flush()
        if stopping:
            log.info("partitions %s revoked: stopped %d runs", sorted(lost), len(stopping))

    async def on_revoked(_app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        revoked: set[TP] = args[0]  # faust sends (app, revoked)
        await abandon({tp.partition for tp in revoked if tp.topic == requests_name})

    async def on_shutdown(_app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        # On SIGTERM faust sends no revocation; stop the runs before the group is left.
        await abandon(set(range(REQUESTS.partition_count(settings))))

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)
    app.on_before_shutdown.connect(on_shutdown)

    async def states_loaded(partition: int) -> int | None:
        """Wait until the partition's states are loaded; the ownership generation they belong to,
        or None: the partition was revoked meanwhile."""
        async with owned.changed:
            generation = owned.generation
            await owned.changed.wait_for(
                lambda: (
                    partition in owned.loaded
                    or partition not in owned.assigned
                    or owned.generation != generation
                )
            )
            return generation if partition in owned.loaded and owned.generation == generation else None

    async def take_place(generation: int) -> bool:
        """Wait for a read-ahead place; False (and no place taken) if a revocation came meanwhile:
        the record is then delivered again to its partition's owner."""
        await queued.acquire()
        if owned.generation != generation:
            queued.release()
            return False
        return True

    async def dead_letter(record: faust.EventT[bytes], exc: BaseException) -> None:
        message = record.message
        log.error("task record %s[%d]@%d failed: %s", message.topic, message.partition, message.offset, exc)
        await resources.producer.dead_letter(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=_header_list(message.headers),
            error=exc,
            consumer=CONSUMER,
        )

    async def ack(record: faust.EventT[bytes]) -> None:
        for done in in_order.done(record):
            await stream_ref["stream"].ack(done)

    def schedule(run: _Run, not_before: datetime | None) -> None:
        runs[run.task_id] = run
        scheduler.submit(run, run.priority, not_before, utc_now())
        wake.set()

    async def receive(record: faust.EventT[bytes]) -> None:
        """Decode one record and route it; acks what needs no run."""
        generation = await states_loaded(record.message.partition)
        if generation is None:
            return  # delivered again to the partition's owner; acknowledged by nobody here
        headers = header_map(_header_list(record.message.headers))
        item = await resources.codec.decode_record(record.value)
        if isinstance(item, TaskRequest):
            await receive_request(record, item, generation)
            return
        if not isinstance(item.payload, TaskSubmitted):
            raise NotASubmissionError(f"{item.event_type} is not a task submission")
        task_id = item.task_id
        state = states.get(task_id)
        if task_id in runs or (
            state is not None and (state.status in TERMINAL or state.waiting_for_approval)
        ):
            log.info(
                "task %s already known (%s); duplicate submission ignored", task_id, state and state.status
            )
            await ack(record)
            return
        run = _Run(task_id, item.payload.priority, submission=item, traceparent=headers.get("traceparent"))
        run.records.append(record)
        not_before = item.payload.not_before
        run.delayed = not_before is not None and not_before > utc_now()
        # Backpressure; a delayed task holds no read-ahead place.
        if not run.delayed and not await take_place(generation):
            return
        schedule(run, not_before)

    async def receive_fork(record: faust.EventT[bytes], request: TaskForkRequested, generation: int) -> None:
        """A fork is a new task: started like a submission, from the source's copied prefix."""
        task_id = request.task_id
        if task_id in runs or states.get(task_id) is not None:
            log.info("fork %s already known; duplicate request ignored", task_id)
            await ack(record)
            return
        run = _Run(task_id, Priority.NORMAL, fork=request)
        run.records.append(record)
        if await take_place(generation):
            schedule(run, None)

    async def start_fork(request: TaskForkRequested) -> tuple[TaskState, ForkTask]:
        """Copy the source's prefix onto the log as the fork's first events; the state after it."""
        source = await read_task_events(settings, resources.codec, request.source_task_id)
        if source[0].envelope.org_id != request.header.org_id:
            raise ForkError(f"task {request.source_task_id} is not in org {request.header.org_id}")
        check_fork(source, request.prefix_events, input=request.input, overrides=request.overrides)
        copied = copy_prefix(source, request.prefix_events, task_id=request.task_id)
        await resources.producer.publish(EVENTS.name(settings), copied)
        command = ForkTask(
            source_task_id=request.source_task_id,
            prefix_events=request.prefix_events,
            source_last_event_id=str(source[request.prefix_events - 1].envelope.event_id),
            forked_by=request.header.user_id,
            model=request.model,
            input=request.input,
            overrides=request.overrides,
        )
        return fold(event for event, _ in copied), command

    async def receive_request(record: faust.EventT[bytes], request: TaskRequest, generation: int) -> None:
        if isinstance(request, TaskForkRequested):
            await receive_fork(record, request, generation)
            return
        command = command_of(request)
        run = runs.get(request.task_id)
        if run is not None:
            run.records.append(record)
            if run.started:
                await run.inbox.put(command)
            else:
                run.commands.append(command)
            return
        state = states.get(request.task_id)
        if state is None:
            raise UnknownTaskError(
                f"{request.record_name} for task {request.task_id}, which this worker has not seen"
            )
        if state.status in TERMINAL:
            log.info(
                "%s for task %s, which is %s: nothing to do",
                request.record_name,
                request.task_id,
                state.status,
            )
            await ack(record)
            return
        woken = _Run(request.task_id, state.priority, commands=[command])
        woken.records.append(record)
        if await take_place(generation):
            schedule(woken, None)

    async def execute(run: _Run, priority: Priority) -> None:
        run.started = True
        if not run.delayed:
            queued.release()
        if run.revoked:
            scheduler.done(priority)
            wake.set()
            return
        try:
            state = states.get(run.task_id) or TaskState()
            saved_at = states.restored.pop(run.task_id, None)
            if saved_at is not None:
                state = await reconcile(state, saved_at, partial(read_history, run.task_id))
                states.put(state)
            if run.submission is not None and state.status is Status.NEW:
                state = evolve(state, run.submission)
                states.put(state)
            if run.fork is not None and state.status is Status.NEW:
                # The prefix is on the log before TaskForked is decided; copying it again after a
                # crash writes the same records (ids and times come from the source).
                state, fork_command = await start_fork(run.fork)
                states.put(state)
                run.commands.insert(0, fork_command)
            while not run.inbox.empty():
                run.commands.append(run.inbox.get_nowait())
            # A woken task (approval, cancellation) continues the trace of the request that woke it.
            parent = run.traceparent or (
                traceparent_from(_header_list(run.records[0].message.headers)) if run.records else None
            )
            with tracing.span(
                "task run", parent, attributes={"agentlog.task_id": run.task_id}
            ) as traceparent:
                bind_task(run.task_id, state.org_id or None, traceparent)
                state = await resources.runner.run(
                    state, states.put, traceparent=traceparent, inbox=run.inbox, commands=run.commands
                )
            log.debug("task %s ran to %s after %d events", run.task_id, state.status, state.sequence + 1)
            if state.status is Status.FAILED and state.failure_reason == RETRY_EXHAUSTED and run.submission:
                # The retry limit is reached: the submission is parked with the reason, for an operator.
                await dead_letter(run.records[0], RetryLimitReached(state.error or "retries exhausted"))
        except Exception as exc:
            if is_outage(exc):
                # Not a bad record: crash so the supervisor restarts the worker and the records are
                # delivered again (at-least-once).
                stop_for_outage(exc)
            log.exception("task %s failed in the processor", run.task_id)
            await dead_letter(run.records[0], exc)
        finally:
            if runs.get(run.task_id) is run:
                del runs[run.task_id]
            scheduler.done(priority)
            wake.set()
        if run.revoked:
            return  # its records go to the partition's new owner, unacknowledged
        # Commands that arrived after the loop's last look wake the task again.
        leftover = [run.inbox.get_nowait() for _ in range(run.inbox.qsize())]
        after = states.get(run.task_id)
        if leftover and after is not None and after.status not in TERMINAL:
            if await take_place(owned.generation):
                schedule(_Run(run.task_id, priority, commands=leftover, records=run.records), None)
            return
        for record in run.records:
            await ack(record)

    async def read_history(task_id: str, since: datetime | None) -> list[Event]:
        return await read_task_events(settings, resources.codec, task_id, since=since)

    async def dispatch() -> None:
        """Start every task the scheduler allows; sleep until a slot frees or a delay ends."""
        while True:
            scheduler.release_due(utc_now())
            while (taken := scheduler.take()) is not None:
                run, priority = taken
                task = asyncio.create_task(execute(run, priority))
                run.task = task
                background.add(task)
                task.add_done_callback(background.discard)
            wakeup = scheduler.next_wakeup()
            timeout = max((wakeup - utc_now()).total_seconds(), 0.0) if wakeup else None
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), timeout)
            except TimeoutError:
                pass

    background: set[asyncio.Task[None]] = set()

    @app.agent(requests_topic, concurrency=1)
    async def run_tasks(stream: faust.StreamT[bytes]) -> None:
        await resources.ensure_started()
        manual = stream.noack()  # type: ignore[attr-defined]  # on faust's Stream, not its StreamT protocol
        stream_ref["stream"] = manual
        dispatcher = asyncio.create_task(dispatch())
        background.add(dispatcher)
        async for record in manual.events():
            message = record.message
            in_order.delivered(record)
            with (
                tracing.span(
                    "processor receive",
                    traceparent_from(_header_list(message.headers)),
                    kind=tracing.SpanKind.CONSUMER,
                    attributes={"messaging.destination.name": message.topic},
                ) as traceparent,
                task_context(
                    message.key.decode(errors="replace") if message.key else None, None, traceparent
                ),
            ):
                try:
                    await receive(record)
                except Exception as exc:
                    if is_outage(exc):
                        stop_for_outage(exc)
                    await dead_letter(record, exc)
                    await ack(record)

    return app


class RetryLimitReached(RuntimeError):
    """A task failed because an effect kept failing after its last allowed attempt."""


def main() -> None:
    """Run the processor worker in this process (``agentlog serve`` starts it as a child)."""
    # uvloop: every step of a task is a network round trip, so the loop's latency is the task's
    # latency (unloaded K = 5 task 96 -> 65 ms, docs/benchmarks.md).
    mode.loop.use("uvloop")
    settings = get_settings()
    app = build_app(settings)
    # The entry point configured logging (JSON lines, streams/logs.py): faust must not replace it.
    worker = faust.Worker(app, loglevel="INFO", quiet=True, override_logging=False)
    worker.execute_from_commandline()
