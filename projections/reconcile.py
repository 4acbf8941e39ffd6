"""``agentlog reconcile``: the log, the Postgres events table and the audit index, compared per task.

Each source is reduced to one :class:`TaskSummary` per task (how many events, the highest sequence,
and a SHA-256 over the event ids in sequence order); :func:`compare` (pure) lists every difference
from the log, which is the system of record. Postgres is read through a server-side cursor and
Elasticsearch through a point in time with ``search_after``, both ordered by task, so they hold one
task at a time; the log's records of a task are spread over two topics, so the log side holds the
(sequence, event id) pairs it has read until the end (about 100 bytes an event).

The sources are read one after the other while the platform may be writing: on a busy system a
task still running can differ only because a projector had not caught up yet; run it again.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Literal

import psycopg
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from elasticsearch import AsyncElasticsearch
from pydantic import BaseModel, computed_field

from schemas.codec import EventCodec
from schemas.events import Event
from schemas.registry.client import RegistryClient, RegistryUnavailable
from streams.settings import Settings
from streams.topics import TASK_TOPICS

Source = Literal["log", "postgres", "elasticsearch"]
PROJECTIONS: tuple[Source, ...] = ("postgres", "elasticsearch")
Row = tuple[str, int, str]
"""(task id, sequence, event id) of one stored event."""


class TaskSummary(BaseModel, frozen=True):
    """One task as one source holds it."""

    events: int
    max_sequence: int
    ordered_hash: str
    """SHA-256 (hex) over the event ids (canonical UUID text, one a line) in sequence order."""


class SourceTotals(BaseModel):
    tasks: int
    events: int


class Difference(BaseModel):
    """One way a projection's task differs from the log's."""

    task_id: str
    source: Source
    kind: Literal["missing", "extra", "events", "max_sequence", "ordered_hash"]
    """missing: the log has the task, the source not; extra: the reverse; else the field that differs."""
    log: int | str | None
    found: int | str | None


class ReconcileReport(BaseModel):
    """Totals per source and every difference from the log (none: the projections are exact)."""

    sources: list[Source]
    totals: dict[str, SourceTotals]
    differences: list[Difference]
    undecodable_records: int = 0
    """Log records that did not decode (they are in no projection; see the dead-letter topic)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.differences


def ordered_hash(event_ids: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for event_id in event_ids:
        digest.update(str(uuid.UUID(str(event_id))).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def summarize(rows: Iterable[Row]) -> dict[str, TaskSummary]:
    """Summaries of ``rows``, which must come grouped by task and in sequence order within a task.

    Every row counts, so a source holding an event twice (the same id in two indices) shows as a
    difference in ``events``.
    """
    summaries: dict[str, TaskSummary] = {}
    current: str | None = None
    ids: list[str] = []
    sequences: list[int] = []

    def close() -> None:
        if current is not None:
            summaries[current] = TaskSummary(
                events=len(ids), max_sequence=max(sequences), ordered_hash=ordered_hash(ids)
            )

    for task_id, sequence, event_id in rows:
        if task_id != current:
            close()
            if task_id in summaries:
                raise ValueError(f"rows of task {task_id} are not grouped together")
            current, ids, sequences = task_id, [], []
        elif sequence < sequences[-1]:
            raise ValueError(
                f"rows of task {task_id} are not in sequence order ({sequence} after {sequences[-1]})"
            )
        ids.append(str(event_id))
        sequences.append(sequence)
    close()
    return summaries


def summarize_log(events: Iterable[Row]) -> dict[str, TaskSummary]:
    """Summaries of events as read from the log, in any order: a sequence seen again is a
    redelivery and counts once, the first one read winning (as the projector's key does)."""
    by_task: dict[str, dict[int, str]] = defaultdict(dict)
    for task_id, sequence, event_id in events:
        by_task[task_id].setdefault(sequence, str(event_id))
    return summarize(
        (task_id, sequence, by_task[task_id][sequence])
        for task_id in sorted(by_task)
        for sequence in sorted(by_task[task_id])
    )


def compare(
    log: Mapping[str, TaskSummary], projections: Mapping[Source, Mapping[str, TaskSummary]]
) -> ReconcileReport:
    """Every difference of each projection from the log, task by task, with each source's totals."""
    differences: list[Difference] = []
    for source, found in projections.items():
        for task_id in sorted(log.keys() | found.keys()):
            expected, actual = log.get(task_id), found.get(task_id)
            if actual is None and expected is not None:
                differences.append(
                    Difference(
                        task_id=task_id, source=source, kind="missing", log=expected.events, found=None
                    )
                )
            elif expected is None and actual is not None:
                differences.append(
                    Difference(task_id=task_id, source=source, kind="extra", log=None, found=actual.events)
                )
            elif expected is not None and actual is not None:
                for field in ("events", "max_sequence", "ordered_hash"):
                    want, got = getattr(expected, field), getattr(actual, field)
                    if want != got:
                        differences.append(
                            Difference(task_id=task_id, source=source, kind=field, log=want, found=got)
                        )
    totals: dict[str, SourceTotals] = {
        source: SourceTotals(tasks=len(summaries), events=sum(s.events for s in summaries.values()))
        for source, summaries in {"log": log, **projections}.items()
    }
    return ReconcileReport(sources=["log", *projections], totals=totals, differences=differences)


# --- reading the sources -----------------------------------------------------------------------


async def log_rows(
    settings: Settings, codec: EventCodec, *, org: str | None = None, task: str | None = None
) -> tuple[list[Row], int]:
    """Every task event on both task topics up to their current ends (filtered), and how many
    records did not decode. Requests to running tasks are not events and are skipped."""
    from projections.rebuild import LogReader

    rows: list[Row] = []
    undecodable = 0

    async def collect(batch: dict[TopicPartition, list[ConsumerRecord]]) -> int:
        nonlocal undecodable
        for records in batch.values():
            for record in records:
                try:
                    event = await codec.decode_record(record.value)
                except RegistryUnavailable:
                    raise
                except Exception:
                    # Reconcile only reads: parking the record is the live projectors' job.
                    undecodable += 1
                    continue
                if not isinstance(event, Event):
                    continue
                envelope = event.envelope
                if (org is None or envelope.org_id == org) and (task is None or envelope.task_id == task):
                    rows.append((envelope.task_id, envelope.sequence, str(envelope.event_id)))
        return 0

    async with LogReader(settings, topics=[spec.name(settings) for spec in TASK_TOPICS]) as reader:
        await reader.seek_start()
        await reader.read_until(await reader.end_offsets(), collect)
    return rows, undecodable


async def postgres_rows(
    dsn: str, topics: Sequence[str], *, org: str | None = None, task: str | None = None
) -> AsyncIterator[Row]:
    """The deployment's rows of ``task_events`` (read from ``topics``) by task and sequence."""
    where, params = ["topic = ANY(%s)"], [list(topics)]
    for column, value in (("org_id", org), ("task_id", task)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)  # type: ignore[arg-type]
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        # Named = server-side: rows come in chunks of itersize, never all at once.
        async with conn.cursor(name="agentlog_reconcile") as cursor:
            cursor.itersize = 10_000
            await cursor.execute(
                f"SELECT task_id, sequence, event_id FROM task_events WHERE {' AND '.join(where)}"
                " ORDER BY task_id, sequence",
                params,
            )
            async for task_id, sequence, event_id in cursor:
                yield task_id, sequence, str(event_id)


async def elastic_rows(
    client: AsyncElasticsearch,
    alias: str,
    *,
    org: str | None = None,
    task: str | None = None,
    page: int = 5000,
) -> AsyncIterator[Row]:
    """Every document behind ``alias`` by task and sequence (a point in time, ``search_after``)."""
    if not await client.indices.exists(index=alias):
        return
    filters: list[dict[str, Any]] = [
        {"term": {field: value}} for field, value in (("org_id", org), ("task_id", task)) if value is not None
    ]
    # Documents indexed since the last refresh (up to a second ago) are not searchable yet; they
    # would show as missing.
    await client.indices.refresh(index=alias)
    pit = (await client.open_point_in_time(index=alias, keep_alive="2m"))["id"]
    try:
        after: list[Any] | None = None
        while True:
            reply = await client.search(
                pit={"id": pit, "keep_alive": "2m"},
                query={"bool": {"filter": filters}},
                sort=[{"task_id": "asc"}, {"sequence": "asc"}, {"event_id": "asc"}],
                source_includes=["task_id", "sequence", "event_id"],
                size=page,
                search_after=after,
                track_total_hits=False,
            )
            hits = reply["hits"]["hits"]
            for hit in hits:
                doc = hit["_source"]
                yield doc["task_id"], int(doc["sequence"]), doc["event_id"]
            if len(hits) < page:
                return
            after = hits[-1]["sort"]
            pit = reply.get("pit_id", pit)
    finally:
        await client.close_point_in_time(id=pit)


async def _collect(rows: AsyncIterator[Row]) -> dict[str, TaskSummary]:
    # summarize() folds task by task; the rows of one task are all that is held at a time
    # besides the finished summaries.
    buffered: list[Row] = []
    summaries: dict[str, TaskSummary] = {}
    async for row in rows:
        if buffered and row[0] != buffered[-1][0]:
            summaries |= _checked(summaries, summarize(buffered))
            buffered = []
        buffered.append(row)
    return summaries | _checked(summaries, summarize(buffered))


def _checked(done: Mapping[str, TaskSummary], new: dict[str, TaskSummary]) -> dict[str, TaskSummary]:
    repeated = done.keys() & new.keys()
    if repeated:
        raise ValueError(f"rows of task {min(repeated)} are not grouped together")
    return new


async def reconcile(
    settings: Settings,
    *,
    org: str | None = None,
    task: str | None = None,
    sources: Sequence[Source] = PROJECTIONS,
) -> ReconcileReport:
    """Compares the log with the Postgres and/or Elasticsearch projections of ``settings``'s
    deployment (its topic prefix and index alias), optionally of one org or task only."""
    registry = RegistryClient(settings.schema_registry_url)
    try:
        await registry.wait_until_ready()
        rows, undecodable = await log_rows(settings, EventCodec(registry), org=org, task=task)
    finally:
        await registry.close()
    projections: dict[Source, dict[str, TaskSummary]] = {}
    if "postgres" in sources:
        topics = [spec.name(settings) for spec in TASK_TOPICS]
        projections["postgres"] = await _collect(
            postgres_rows(settings.postgres_dsn, topics, org=org, task=task)
        )
    if "elasticsearch" in sources:
        client = AsyncElasticsearch(settings.elasticsearch_url, request_timeout=60)
        try:
            projections["elasticsearch"] = await _collect(
                elastic_rows(client, settings.es_index_prefix, org=org, task=task)
            )
        finally:
            await client.close()
    report = compare(summarize_log(rows), projections)
    report.undecodable_records = undecodable
    return report
