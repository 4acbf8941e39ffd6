"""The processor worker's local state is deleted and the worker killed: it recovers from Kafka alone.

The worker's faust data dir (``AGENTLOG_FAUST_DATA_DIR/worker-1``) is removed while tasks run, then
the worker is killed with ``kill -9`` and the supervisor restarts it on an empty dir. The per-task
state a worker resumes from is the compacted task-state topic (``CheckpointSaved``, written in the
same acknowledged batch as each decision's events; faust's table store is in memory), so:

- the state recovered for every task, read from that topic exactly as a starting worker reads it
  (the latest ``CheckpointSaved`` of the task, decoded with the platform's codec into a
  ``TaskState``), equals ``fold(history)`` of the task's events on the log. This compares the whole
  state, field by field, not a status; a mock could not show it because the point is what a real
  restart finds in Kafka;
- the restarted worker acts on that state: resubmitting each finished task under its idempotency
  key runs nothing again (a worker that had lost the state would run the task a second time,
  duplicating its sequences on the log), and the task that was mid-flight when the state was
  deleted continues from its checkpoint to completion, with no recorded LLM call made again.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.task.decider import fold
from processors.task.state import TaskState
from schemas.codec import EventCodec
from schemas.events import CheckpointSaved
from schemas.registry.client import RegistryClient
from streams.settings import Settings
from streams.topics import TASK_STATE
from tests.fixtures.log_copies import every_copy
from tests.fixtures.platform import ScriptedPlatform, processor_group_lag, running_platform, serve_processor
from tests.fixtures.scripted_llm import ScriptedLlm, Step, providers_yaml, start
from tests.integration.conftest import api, submit_and_wait, task_history, wait_for

FINISHED = 3
LONG_STEPS = 5


@pytest.fixture(scope="module")
def state_platform(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ScriptedPlatform, Path]]:
    home = tmp_path_factory.mktemp("agentlog-state-loss")
    for llm in start(ScriptedLlm()):
        (home / "providers.yaml").write_text(providers_yaml(llm.url))
        env = {
            "AGENTLOG_LLM_PROVIDERS_FILE": str(home / "providers.yaml"),
            "AGENTLOG_LLM_CACHE_ENABLED": "false",
            "AGENTLOG_PROCESSOR_WORKERS": "1",
        }
        with running_platform(stack, home, **env) as (settings, process):
            yield ScriptedPlatform(settings, llm, process), home


async def _checkpoints(settings: Settings, task_ids: set[str]) -> dict[str, TaskState]:
    """The latest checkpointed state of each task on the task-state topic, decoded as a worker does."""
    topic = TASK_STATE.name(settings)
    registry = RegistryClient(settings.schema_registry_url)
    codec = EventCodec(registry)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    latest: dict[str, TaskState] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(TASK_STATE.partition_count(settings))]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        remaining = {tp for tp in tps if ends[tp] > starts[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    if (
                        record.value is not None
                        and record.key is not None
                        and record.key.decode() in task_ids
                    ):
                        event = await codec.decode(record.value)
                        assert isinstance(event.payload, CheckpointSaved)
                        latest[event.task_id] = TaskState.model_validate_json(event.payload.state_json)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
        await registry.close()
    return latest


async def _copies(settings: Settings, task_ids: set[str]) -> Counter[tuple[str, int]]:
    """How many records of each (task, sequence) the task topics hold."""
    found = await every_copy(settings, task_ids)
    return Counter((event.task_id, event.sequence) for events in found.values() for event in events)


def test_deleted_local_state_is_recovered_from_the_log(state_platform: tuple[ScriptedPlatform, Path]) -> None:
    platform, home = state_platform
    settings, llm = platform.settings, platform.llm
    name = f"state-{uuid.uuid4().hex[:8]}"
    calc = Step(tool_calls=(("calculator", {"expression": "6 * 7"}),), delay=1.0)
    llm.scripts[name] = [calc] * (LONG_STEPS - 1) + [Step(content="all done", delay=1.0)]
    quick = f"{name}-quick"
    llm.scripts[quick] = [Step(tool_calls=(("calculator", {"expression": "1 + 1"}),)), Step(content="quick")]

    finished = [
        submit_and_wait(settings, {"query": f"Finished {i} [[{quick}]]"}, idempotency_key=f"{name}-{i}")
        for i in range(FINISHED)
    ]
    assert [view["status"] for view in finished] == ["completed"] * FINISHED, finished
    with api(settings) as client:
        reply = client.post(
            "/v1/tasks", json={"query": f"Mid-flight [[{name}]]"}, headers={"Idempotency-Key": f"{name}-long"}
        )
        assert reply.status_code == 202, reply.text
    long_id = reply.json()["task_id"]
    wait_for(lambda: len(llm.keys_for(long_id)) >= 2, 60, "the long task's second call")

    data_dir = home / "faust" / "worker-1"
    assert data_dir.is_dir(), f"the worker's data dir {data_dir} is where the supervisor puts it"
    shutil.rmtree(data_dir)
    victim = serve_processor(platform.process.pid)
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    restarted = wait_for(lambda: serve_processor(platform.process.pid).pid != victim.pid, 60, "a restart")
    assert restarted

    with api(settings) as client:

        def ended() -> dict[str, Any] | None:
            view = client.get(f"/v1/tasks/{long_id}").json()
            terminal = view.get("status") in ("completed", "failed", "cancelled")
            return view if terminal and view["event_count"] == view["last_sequence"] + 1 else None

        long_view = wait_for(ended, 120, "the mid-flight task to end after the restart")
    assert long_view["status"] == "completed" and long_view["result"] == "all done", long_view
    assert data_dir.is_dir(), "the restarted worker made its data dir again"

    # Every recorded call was made once; the one in flight at the kill at most once more.
    long_history = task_history(settings, long_id)
    keys = [e.payload.idempotency_key for e in long_history if e.event_type == "LlmCallCompleted"]
    assert len(keys) == LONG_STEPS
    redone = 0
    for key, completion in zip(
        keys, [e for e in long_history if e.event_type == "LlmCallCompleted"], strict=True
    ):
        times = sorted(llm.request_times()[key])
        assert 1 <= len(times) <= 2, (key, times)
        if len(times) == 2:
            assert times[0] <= killed_at <= times[1], (key, times, killed_at)
            redone += 1
        assert completion.envelope.occurred_at.timestamp() >= times[-1] - 0.05

    # The recovered state of every task equals the fold of its log.
    task_ids = {view["task_id"] for view in finished} | {long_id}
    recovered = asyncio.run(_checkpoints(settings, task_ids))
    assert set(recovered) == task_ids
    for task_id in task_ids:
        folded = fold(task_history(settings, task_id))
        assert recovered[task_id] == folded, task_id
        assert folded.status.value == "completed"

    # The restarted worker holds that state: resubmitted finished tasks run nothing again.
    before = asyncio.run(_copies(settings, task_ids))
    with api(settings) as client:
        for i, view in enumerate(finished):
            reply = client.post(
                "/v1/tasks",
                json={"query": f"Finished {i} [[{quick}]]"},
                headers={"Idempotency-Key": f"{name}-{i}"},
            )
            assert reply.status_code == 202 and reply.json()["task_id"] == view["task_id"], reply.text
    calls_before = {task_id: llm.keys_for(task_id) for task_id in task_ids}
    # The group commits past a record only once the worker handled it (manual acknowledgements).
    wait_for(lambda: processor_group_lag(settings) == 0, 120, "the resubmissions to be handled")
    time.sleep(2)
    after = asyncio.run(_copies(settings, task_ids))
    grew = {k: (before[k], n) for k, n in after.items() if n != before[k]}
    # Only the resubmissions themselves (sequence 0 on the requests topic) were added.
    assert all(seq == 0 and n == before[(t, seq)] + 1 for (t, seq), (_, n) in grew.items()), grew
    assert len(grew) == FINISHED, grew
    assert {task_id: llm.keys_for(task_id) for task_id in task_ids} == calls_before
    print(
        f"\nstate deleted + kill -9 mid-task: {len(task_ids)} recovered states equal their folds;"
        f" the mid-flight task completed ({redone} in-flight call made once more);"
        f" {FINISHED} resubmissions ran nothing"
    )
