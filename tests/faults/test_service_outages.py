"""Infrastructure outages while multi-step tasks run: Kafka restarted, PostgreSQL stopped for 30 s,
Elasticsearch stopped and then frozen, Redis stopped. All on a private stack (tests/fixtures/
private_stack.py) so that the shared one is never disturbed.

After each outage, with no help from the test: every task whose submission was acknowledged
completes; no event is in the read model twice; the reconcile oracle finds the log, PostgreSQL and
Elasticsearch in agreement; and no LLM call was made twice unless it was in flight when the fault
began or was started during it (the scripted server times every request per idempotency key).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis

from processors.task.decider import fold
from projections.rebuild import LogReader
from projections.reconcile import reconcile
from projections.runner import projected_topics
from schemas.codec import EventCodec
from schemas.events import Event, LlmCallCompleted
from schemas.registry.client import RegistryClient
from streams.consumer import read_dead_letter
from streams.settings import Settings
from streams.topics import DEAD_LETTER, TASK_TOPICS
from tests.faults.conftest import OutagePlatform
from tests.fixtures.scripted_llm import Step
from tests.integration.conftest import bearer, pg_rows, wait_for

STEPS = 4  # LLM calls per task: three with a (pure) calculator call, then the answer
STEP_DELAY = 1.0  # seconds the scripted LLM takes per call: tasks stay in flight across a fault
TASK_TIMEOUT = 240.0  # for every task to end once a fault is over (restart backoffs included)
RECONCILE_TIMEOUT = 180.0


def _client(settings: Settings, timeout: float = 10.0) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://{settings.api_host}:{settings.api_port}",
        timeout=timeout,
        headers={"Authorization": f"Bearer {bearer(settings)}"},
    )


def _script(platform: OutagePlatform, label: str) -> str:
    name = f"{label}-{uuid.uuid4().hex[:8]}"
    calc = Step(tool_calls=(("calculator", {"expression": "6 * 7"}),), delay=STEP_DELAY)
    platform.llm.llm.scripts[name] = [calc] * (STEPS - 1) + [Step(content="all done", delay=STEP_DELAY)]
    return name


def _submit(settings: Settings, name: str, count: int, wave: str, timeout: float = 10.0) -> list[str]:
    """Submits ``count`` tasks; every submission must be acknowledged (202)."""
    ids = []
    with _client(settings, timeout) as client:
        for i in range(count):
            reply = client.post("/v1/tasks", json={"query": f"Outage {wave} task {i} [[{name}]]"})
            assert reply.status_code == 202, reply.text
            ids.append(reply.json()["task_id"])
    return ids


def _try_submit(settings: Settings, name: str, wave: str, i: int) -> str | None:
    """One submission made while a service is down: the task id if it was acknowledged, else None
    (a refused or timed-out submission promises nothing)."""
    try:
        with _client(settings, timeout=90) as client:
            reply = client.post("/v1/tasks", json={"query": f"Outage {wave} task {i} [[{name}]]"})
    except httpx.HTTPError:
        return None
    return str(reply.json()["task_id"]) if reply.status_code == 202 else None


def _views(settings: Settings, task_ids: list[str]) -> dict[str, dict[str, Any]]:
    with _client(settings) as client:
        return {t: client.get(f"/v1/tasks/{t}").json() for t in task_ids}


def _ended(settings: Settings, task_ids: list[str]) -> list[dict[str, Any]] | None:
    """The views once every task ended and all its events are projected in PostgreSQL."""
    views = []
    try:
        with _client(settings) as client:
            for task_id in task_ids:
                reply = client.get(f"/v1/tasks/{task_id}")
                if reply.status_code != 200:
                    return None
                view = reply.json()
                if view["status"] not in ("completed", "failed", "cancelled", "rejected"):
                    return None
                if view["event_count"] != view["last_sequence"] + 1:
                    return None
                views.append(view)
    except httpx.HTTPError:
        return None
    return views


def _wait_ended(settings: Settings, task_ids: list[str], timeout: float, what: str) -> list[dict[str, Any]]:
    try:
        views: list[dict[str, Any]] = wait_for(lambda: _ended(settings, task_ids), timeout, what)
    except AssertionError:
        try:
            seen = _views(settings, task_ids)
            summary = {
                t: (v.get("status"), v.get("event_count"), v.get("last_sequence")) for t, v in seen.items()
            }
        except httpx.HTTPError as exc:
            summary = {"API": repr(exc)}  # type: ignore[dict-item]
        raise AssertionError(f"timed out after {timeout}s waiting for {what}: {summary}") from None
    return views


def _completed_in_postgres(settings: Settings, task_ids: list[str]) -> int:
    rows = pg_rows(
        settings,
        "SELECT count(*) AS n FROM task_executions WHERE task_id = ANY(%s) AND status = 'completed'",
        task_ids,
    )
    return int(rows[0]["n"])


def _projected_events(settings: Settings) -> int:
    return int(pg_rows(settings, "SELECT count(*) AS n FROM task_events")[0]["n"])


def _check_tasks(platform: OutagePlatform, task_ids: list[str], fault_ended: float) -> int:
    """Every task completed with its answer, folds without a gap or broken link, is in PostgreSQL
    once per event, and made each LLM call once, unless the call's first request came before the
    fault ended (in flight at the fault, or started during it). Returns the calls made again."""
    views = _wait_ended(platform.settings, task_ids, TASK_TIMEOUT, f"{len(task_ids)} tasks to end")
    assert [v["status"] for v in views] == ["completed"] * len(task_ids), [v["error"] for v in views]
    assert {v["result"] for v in views} == {"all done"}
    requests = platform.llm.requests()
    histories = asyncio.run(_histories(platform.settings, set(task_ids)))
    redone = 0
    for task_id in task_ids:
        history = histories[task_id]
        assert fold(history).status.value == "completed"
        rows = pg_rows(
            platform.settings,
            "SELECT count(*) AS n, count(DISTINCT sequence) AS d FROM task_events WHERE task_id = %s",
            task_id,
        )
        assert rows[0]["n"] == rows[0]["d"] == len(history), (task_id, rows, len(history))
        completions = {
            e.payload.idempotency_key: e for e in history if isinstance(e.payload, LlmCallCompleted)
        }
        assert len(completions) == STEPS, (task_id, sorted(completions))
        for key, completion in completions.items():
            times = sorted(requests.get(key, []))
            assert len(times) >= 1, (key, "the scripted LLM never saw this call")
            assert platform.llm.llm.count(key) == len(times), (key, times)
            if len(times) > 1:
                assert times[0] <= fault_ended, (key, times, fault_ended, "a call made twice without a fault")
                redone += len(times) - 1
            # The answer on the log is the one to the last request: nothing recorded was redone.
            assert completion.envelope.occurred_at.timestamp() >= times[-1] - 0.05, (key, times)
    return redone


async def _histories(settings: Settings, task_ids: set[str]) -> dict[str, list[Event]]:
    """The tasks' events read back from the log (not the read models) in one pass, by sequence."""
    registry = RegistryClient(settings.schema_registry_url)
    codec = EventCodec(registry)
    found: dict[str, dict[int, Event]] = {task_id: {} for task_id in task_ids}

    async def collect(batch: dict[Any, list[Any]]) -> int:
        for records in batch.values():
            for record in records:
                event = await codec.decode_record(record.value)
                if isinstance(event, Event) and event.task_id in found:
                    # As streams.history: a record written twice counts once (its first copy).
                    found[event.task_id].setdefault(event.sequence, event)
        return 0

    try:
        async with LogReader(settings, topics=[spec.name(settings) for spec in TASK_TOPICS]) as reader:
            await reader.seek_start()
            await reader.read_until(await reader.end_offsets(), collect)
    finally:
        await registry.close()
    return {task_id: [events[n] for n in sorted(events)] for task_id, events in found.items()}


def _assert_reconciled(settings: Settings, timeout: float = RECONCILE_TIMEOUT) -> float:
    """Waits (projectors may still be catching up) until the log, PostgreSQL and Elasticsearch agree;
    returns how long that took."""
    started = time.monotonic()
    deadline = started + timeout
    last = None
    while True:
        try:
            report = asyncio.run(reconcile(settings))
        except Exception as exc:  # a source still recovering: try again until the deadline
            last = repr(exc)
        else:
            if report.ok:
                return time.monotonic() - started
            last = f"totals {report.totals}; differences {report.differences[:20]}"
        if time.monotonic() > deadline:
            raise AssertionError(f"reconcile still reports differences after {timeout}s: {last}")
        time.sleep(2)


def _readiness(settings: Settings) -> tuple[int, dict[str, bool]]:
    reply = httpx.get(f"http://{settings.api_host}:{settings.api_port}/readyz", timeout=15)
    return reply.status_code, {check["name"]: check["ok"] for check in reply.json()["checks"]}


@contextmanager
def _background_submissions(
    settings: Settings, name: str, wave: str, count: int, every: float
) -> Iterator[list[Future[str | None]]]:
    """Submits ``count`` tasks, one every ``every`` seconds, in the background while the block runs."""
    futures: list[Future[str | None]] = []
    with ThreadPoolExecutor(max_workers=count) as pool:
        for i in range(count):
            futures.append(pool.submit(_try_submit, settings, name, wave, i))
            time.sleep(every)
        yield futures


def _acknowledged(futures: list[Future[str | None]]) -> list[str]:
    return [task_id for f in futures if (task_id := f.result(timeout=120)) is not None]


def test_kafka_broker_restart_mid_run_loses_no_acknowledged_task(outage_platform: OutagePlatform) -> None:
    platform = outage_platform
    settings = platform.settings
    name = _script(platform, "kafka")
    task_ids = _submit(settings, name, 24, "kafka-before")
    wait_for(lambda: platform.llm.made(task_ids) >= len(task_ids), 120, "every task's first call")
    in_flight = len(task_ids) - _completed_in_postgres(settings, task_ids)

    stop_began = time.time()
    platform.stack.stop("kafka")
    broker_gone = time.time()
    # Nothing is projected while the broker is away: any later increase came after its return.
    projected_before = _projected_events(settings)
    # Submissions while the broker is away: an acknowledged one must run like any other.
    with _background_submissions(settings, name, "kafka-during", 4, every=1.0) as during:
        time.sleep(max(0.0, 8.0 - (time.time() - broker_gone)))
        platform.stack.start("kafka")
        broker_back = time.time()
    downtime = broker_back - stop_began

    first_call = wait_for(lambda: platform.llm.first_after(broker_back), 180, "an LLM call after the restart")
    wait_for(
        lambda: _projected_events(settings) > projected_before, 180, "an event projected after the restart"
    )
    first_projection = time.time()
    acknowledged = _acknowledged(during)
    _wait_ended(settings, task_ids + acknowledged, TASK_TIMEOUT, "every task to end after the restart")
    all_done = time.time()
    redone = _check_tasks(platform, task_ids + acknowledged, fault_ended=broker_back)
    reconcile_wait = _assert_reconciled(settings)
    print(
        f"\nKafka: down {downtime:.1f}s ({broker_gone - stop_began:.1f}s to stop), {in_flight} of"
        f" {len(task_ids)} tasks in flight; {len(acknowledged)}/4 submissions during the outage"
        f" acknowledged; first LLM call {first_call - broker_back:.1f}s and first projected event"
        f" {first_projection - broker_back:.1f}s after the broker was back; all"
        f" {len(task_ids) + len(acknowledged)} tasks ended {all_done - broker_back:.1f}s after;"
        f" reconciled after {reconcile_wait:.1f}s more; {redone} calls made again;"
        f" supervisor restarts {platform.supervisor_restarts()}"
    )
    assert in_flight > 0


async def _projected_below_stored_offsets(settings: Settings) -> tuple[int, list[str]]:
    """Reads every record of the Postgres projector's topics below the offset it stored for its
    partition and returns how many were checked and which are missing from the read model."""
    stored = {
        (row["topic"], row["partition"]): row["next_offset"]
        for row in pg_rows(
            settings,
            "SELECT topic, partition, next_offset FROM projection_offsets WHERE projector = 'postgres'",
        )
    }
    events = {
        (row["task_id"], row["sequence"]): str(row["event_id"])
        for row in pg_rows(settings, "SELECT task_id, sequence, event_id FROM task_events")
    }
    dead = {
        (row["topic"], row["kafka_partition"], row["kafka_offset"])
        for row in pg_rows(settings, "SELECT topic, kafka_partition, kafka_offset FROM dead_letters")
    }
    registry = RegistryClient(settings.schema_registry_url)
    codec = EventCodec(registry)
    checked = 0
    missing: list[str] = []
    dead_letter_topic = DEAD_LETTER.name(settings)

    async def check(batch: dict[Any, list[Any]]) -> int:
        nonlocal checked
        for tp, records in batch.items():
            for record in records:
                if record.offset >= stored.get((tp.topic, tp.partition), 0):
                    continue
                checked += 1
                where = f"{tp.topic}[{tp.partition}]@{record.offset}"
                if tp.topic == dead_letter_topic:
                    parked = await read_dead_letter(codec, record)
                    if (parked.topic, parked.partition, parked.offset) not in dead:
                        missing.append(f"dead letter {where}")
                    continue
                event = await codec.decode_record(record.value)
                if not isinstance(event, Event):
                    continue  # a request to a running task: no read model holds it
                if events.get((event.task_id, event.sequence)) != str(event.envelope.event_id):
                    missing.append(f"{event.event_type} {event.task_id}#{event.sequence} at {where}")
        return 0

    try:
        async with LogReader(settings, topics=projected_topics("postgres", settings)) as reader:
            await reader.seek_start()
            ends = await reader.end_offsets()
            for tp, end in ends.items():
                assert stored.get((tp.topic, tp.partition), 0) <= end, (tp, stored, ends)
            await reader.read_until(
                {tp: min(end, stored.get((tp.topic, tp.partition), 0)) for tp, end in ends.items()}, check
            )
    finally:
        await registry.close()
    return checked, missing


def test_postgres_down_30s_projector_stores_no_offset_past_an_unprojected_event(
    outage_platform: OutagePlatform,
) -> None:
    platform = outage_platform
    settings = platform.settings
    name = _script(platform, "postgres")
    task_ids = _submit(settings, name, 12, "postgres-before")
    wait_for(lambda: platform.llm.made(task_ids) >= len(task_ids), 120, "every task's first call")
    in_flight = len(task_ids) - _completed_in_postgres(settings, task_ids)

    stop_began = time.time()
    readiness_during: tuple[int, dict[str, bool]] | None = None
    with platform.stack.stopped("postgres"):
        down_at = time.time()
        # Tasks keep running on the log while the read model is away; submissions need no Postgres.
        during = _submit(settings, name, 8, "postgres-during")
        readiness_during = wait_for(
            lambda: (r := _readiness(settings))[0] == 503 and not r[1]["postgres"] and r, 30, "/readyz 503"
        )
        calls_during = platform.llm.made(task_ids + during)
        time.sleep(max(0.0, 30.0 - (time.time() - down_at)))
        calls_during = platform.llm.made(task_ids + during) - calls_during
    back_at = time.time()
    downtime = back_at - stop_began

    wait_for(lambda: _readiness(settings)[0] == 200, 60, "/readyz 200 after PostgreSQL is back")
    ready_after = time.time() - back_at
    _wait_ended(settings, task_ids + during, TASK_TIMEOUT, "every task projected after the outage")
    caught_up = time.time() - back_at
    redone = _check_tasks(platform, task_ids + during, fault_ended=back_at)
    checked, missing = asyncio.run(_projected_below_stored_offsets(settings))
    assert checked > 0
    assert not missing, f"{len(missing)} records below the stored offsets are not projected: {missing[:20]}"
    reconcile_wait = _assert_reconciled(settings)
    print(
        f"\nPostgreSQL: down {downtime:.1f}s with {in_flight} of {len(task_ids)} tasks in flight and 8"
        f" submitted during the outage ({calls_during} LLM calls made meanwhile); /readyz said"
        f" {readiness_during[1]} during it and was 200 again {ready_after:.1f}s after; all tasks"
        f" projected {caught_up:.1f}s after; {checked} records below the stored offsets all projected;"
        f" reconciled after {reconcile_wait:.1f}s more; {redone} calls made again;"
        f" supervisor restarts {platform.supervisor_restarts()}"
    )
    assert calls_during > 0, "tasks should keep running on the log while PostgreSQL is down"


def test_elasticsearch_stopped_then_frozen_postgres_side_keeps_going(outage_platform: OutagePlatform) -> None:
    platform = outage_platform
    settings = platform.settings
    name = _script(platform, "elastic")
    figures = []
    all_ids: list[str] = []
    for how in ("stopped", "frozen"):
        before = _submit(settings, name, 8, f"es-{how}-before")
        wait_for(
            lambda before=before: platform.llm.made(before) >= len(before), 120, "every task's first call"
        )
        in_flight = len(before) - _completed_in_postgres(settings, before)
        began = time.time()
        outage = platform.stack.stopped if how == "stopped" else platform.stack.paused
        with outage("elasticsearch"):
            during = _submit(settings, name, 8, f"es-{how}-during")
            readiness = wait_for(
                lambda: (r := _readiness(settings))[0] == 503 and not r[1]["elasticsearch"] and r,
                30,
                "/readyz 503",
            )
            # The Postgres side does not wait for Elasticsearch: tasks submitted during the outage
            # complete and are visible while it lasts.
            views = _wait_ended(settings, during, 120, f"tasks submitted while Elasticsearch is {how}")
            assert [v["status"] for v in views] == ["completed"] * len(during)
            visible_after = time.time() - began
            time.sleep(max(0.0, 20.0 - (time.time() - began)))
        back = time.time()
        redone = _check_tasks(platform, before + during, fault_ended=back)
        reconcile_wait = _assert_reconciled(settings)
        all_ids += before + during
        figures.append(
            f"{how} {back - began:.1f}s with {in_flight} of {len(before)} tasks in flight; the 8 submitted"
            f" during it completed in Postgres {visible_after:.1f}s into it (readyz {readiness[1]});"
            f" the audit index caught up (reconciled) {time.time() - back:.1f}s after"
            f" (reconcile wait {reconcile_wait:.1f}s); {redone} calls made again"
        )
    print(f"\nElasticsearch: {'; '.join(figures)}; supervisor restarts {platform.supervisor_restarts()}")


def test_redis_down_cache_misses_rate_limit_fails_open_tasks_complete(
    outage_platform: OutagePlatform,
) -> None:
    platform = outage_platform
    settings = platform.settings
    name = _script(platform, "redis")
    query = f"Outage redis cached probe [[{name}]]"
    tokens: list[str] = []
    listening = threading.Event()
    stop_listening = threading.Event()

    def listen() -> None:
        # Streamed tokens are Redis pub/sub messages; this subscriber is there before and after the
        # outage (it reconnects like any client).
        while not stop_listening.is_set():
            try:
                client = redis.Redis.from_url(settings.redis_url, socket_timeout=1)
                pubsub = client.pubsub()
                pubsub.psubscribe("agentlog:stream:*")
                listening.set()
                while not stop_listening.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message and message["type"] == "pmessage":
                        tokens.append(message["channel"].decode())
            except redis.RedisError:
                time.sleep(0.5)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        assert listening.wait(10)

        def same_query_task() -> str:
            with _client(settings) as client:
                reply = client.post("/v1/tasks", json={"query": query})
                assert reply.status_code == 202, reply.text
                return str(reply.json()["task_id"])

        def calls_of(task_id: str) -> int:
            return sum(len(t) for k, t in platform.llm.requests().items() if k.startswith(task_id))

        # Before: the first run of the query calls the model and streams; a second run is all cache.
        first = same_query_task()
        _wait_ended(settings, [first], 120, "the first run of the cached query")
        assert calls_of(first) == STEPS
        assert any(first in channel for channel in tokens), "answers are streamed while Redis is up"
        cached = same_query_task()
        _wait_ended(settings, [cached], 120, "the second run of the cached query")
        assert calls_of(cached) == 0, "the second run of the same query should be answered from the cache"

        before = _submit(settings, name, 8, "redis-before")
        wait_for(lambda: platform.llm.made(before) >= len(before), 120, "every task's first call")
        in_flight = len(before) - _completed_in_postgres(settings, before)
        began = time.time()
        with platform.stack.stopped("redis"):
            down_at = time.time()
            status, checks = wait_for(
                lambda: (r := _readiness(settings))[0] == 503 and not r[1]["redis"] and r, 30, "/readyz 503"
            )
            # The rate limiter fails open: authenticated calls are answered while Redis is away.
            during = _submit(settings, name, 8, "redis-during")
            with _client(settings) as client:
                assert client.get(f"/v1/tasks/{before[0]}").status_code == 200
            # The cache is a miss, not an error: the same query calls the model again.
            missed = same_query_task()
            _wait_ended(settings, [missed], 120, "the cached query while Redis is down")
            assert calls_of(missed) == STEPS
            views = _wait_ended(settings, during, 120, "tasks submitted while Redis is down")
            assert [v["status"] for v in views] == ["completed"] * len(during)
            streamed_during = len(tokens)
            time.sleep(max(0.0, 15.0 - (time.time() - down_at)))
        back = time.time()
        redone = _check_tasks(platform, before + during, fault_ended=back)
        wait_for(lambda: _readiness(settings)[0] == 200, 60, "/readyz 200 after Redis is back")

        # After: the cache answers again, and answers are streamed again.
        hit = same_query_task()
        _wait_ended(settings, [hit], 120, "the cached query after Redis is back")
        assert calls_of(hit) == 0, "the cache should answer again once Redis is back"
        after = _submit(settings, name, 1, "redis-after")
        _check_tasks(platform, after, fault_ended=back)
        wait_for(
            lambda: any(after[0] in channel for channel in tokens), 30, "streamed tokens after Redis is back"
        )
        reconcile_wait = _assert_reconciled(settings)
        print(
            f"\nRedis: down {back - began:.1f}s with {in_flight} of {len(before)} tasks in flight; /readyz"
            f" {status} {checks}; 8 submissions during it acknowledged and completed; the cached query"
            f" called the model {calls_of(missed)} times during it, {calls_of(hit)} after;"
            f" {streamed_during} streamed messages seen until Redis was restarted, {len(tokens)} in all;"
            f" reconciled after"
            f" {reconcile_wait:.1f}s; {redone} calls made again;"
            f" supervisor restarts {platform.supervisor_restarts()}"
        )
    finally:
        stop_listening.set()
        listener.join(timeout=5)


@pytest.fixture(autouse=True)
def _report_duration(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"\n{request.node.name}: {time.monotonic() - started:.1f}s")
