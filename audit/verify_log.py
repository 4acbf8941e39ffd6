"""``agentlog verify``: the checks of :mod:`audit.verify` run against a deployment's log."""

from __future__ import annotations

from audit.log import ProgressCallback, ReadStats, read_checkpoints, read_events, read_seals
from audit.verify import LoggedEvent, VerifyReport, check_seal, day_leaves, verify_task, verify_tasks
from schemas.codec import EventCodec
from streams.history import TaskNotFoundError
from streams.settings import Settings


async def verify_log(
    settings: Settings,
    codec: EventCodec,
    *,
    task_id: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> VerifyReport:
    """One task's chain, or (``task_id`` None) every task's chain and every sealed day's root.

    The processor's checkpoints vouch for the digest of the last event they include, which is how an
    edit of a task's last event (no successor holds its digest) is caught.
    """
    stats = ReadStats()
    logged = [
        LoggedEvent.of(record.event, record.position)
        async for record in read_events(
            settings, codec, task_id=task_id, stats=stats, on_progress=on_progress
        )
    ]
    attested = await read_checkpoints(settings, codec, task_id=task_id)
    if task_id is not None:
        if not logged:
            raise TaskNotFoundError(f"no events of task {task_id} on the log")
        tasks = [verify_task(task_id, logged, attested.get(task_id))]
        return VerifyReport(tasks=tasks, undecodable_records=len(stats.undecodable))
    seals = [
        check_seal(seal, day_leaves(logged, seal.org_id, seal.day))
        for seal in await read_seals(settings, codec)
    ]
    return VerifyReport(
        tasks=verify_tasks(logged, attested), seals=seals, undecodable_records=len(stats.undecodable)
    )
