"""``agentlog reconcile``: the log, the Postgres events table and the audit index, compared per task.

Each source is reduced to one :class:`TaskSummary` per task (how many events, the highest sequence,
and a SHA-256 over the event ids in sequence order); :func:`compare` (pure) lists every difference
from the log, which is the system of record. Postgres is read through a server-side cursor and
Elasticsearch through a point in time with ``search_after``, both ordered by task, so they hold one
task at a time; the log's records of a task are spread over two topics, so the log side holds what
it needs of each event (sequence, id, chain hashes, place) until the end (about 500 bytes an event).

The log is also checked against itself (:func:`check_log`: no gap in a task's sequences, no
sequence held by two different events, an unbroken hash chain, by :func:`audit.verify.verify_task`)
and, given a provider's call counts per idempotency key, against the outside world
(:func:`audit.effects.check_effects`).

The sources are read one after the other while the platform may be writing: on a busy system a
task still running can differ only because a projector had not caught up yet; run it again.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from elasticsearch import AsyncElasticsearch
from pydantic import BaseModel, computed_field

from audit.effects import COUNTED_KINDS, EffectDifference, EffectLedger, check_effects
from audit.verify import LoggedEvent, verify_task
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


DifferenceKind = Literal[
    "missing",
    "extra",
    "events",
    "max_sequence",
    "ordered_hash",
    "sequence_gap",
    "duplicate_sequence",
    "hash_chain",
]


class Difference(BaseModel):
    """One way a projection's task differs from the log's, or (source ``log``) the log from itself."""

    task_id: str
    source: Source
    kind: DifferenceKind
    """missing: the log has the task, the source not; extra: the reverse; events, max_sequence,
    ordered_hash: that field differs. Source ``log``: sequence_gap (``log`` the first sequence
    missing below the highest, ``found`` how many are missing); duplicate_sequence (``log`` the
    first event id read for the sequence, ``found`` another); hash_chain (the first broken link as
    ``agentlog verify`` names it: ``log`` the hash expected, ``found`` the one on the log)."""
    log: int | str | None
    found: int | str | None
    detail: str = ""


class ReconcileReport(BaseModel):
    """Totals per source and every difference from the log (none: the projections are exact)."""

    sources: list[Source]
    totals: dict[str, SourceTotals]
    differences: list[Difference]
    undecodable_records: int = 0
    """Log records that did not decode (they are in no projection; see the dead-letter topic)."""
    effects_checked: int | None = None
    """Idempotency keys compared with a provider's call counts (None: no counts were given)."""
    effect_differences: list[EffectDifference] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.differences and not self.effect_differences


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


def check_log(task_id: str, events: Sequence[tuple[str, LoggedEvent]]) -> list[Difference]:
    """The log's own differences for one task, from its events in log order as (event id, what the
    chain check needs): a gap below the highest sequence, a sequence held by two different events,
    and the first broken link of the hash chain (:func:`audit.verify.verify_task`). A redelivered
    copy (same id, same bytes) is no difference. The chain check stops at its first break, and a
    break that is only the gap or the duplicate already reported is not reported twice."""
    differences: list[Difference] = []
    first_ids: dict[int, str] = {}
    duplicated: set[int] = set()
    for event_id, logged in events:
        first = first_ids.setdefault(logged.sequence, event_id)
        if first != event_id and logged.sequence not in duplicated:
            duplicated.add(logged.sequence)
            differences.append(
                Difference(
                    task_id=task_id,
                    source="log",
                    kind="duplicate_sequence",
                    log=first,
                    found=event_id,
                    detail=f"sequence {logged.sequence} is held by two events (again at {logged.position})",
                )
            )
    missing = [n for n in range(max(first_ids) + 1) if n not in first_ids] if first_ids else []
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        differences.append(
            Difference(
                task_id=task_id,
                source="log",
                kind="sequence_gap",
                log=missing[0],
                found=len(missing),
                detail=f"sequences not on the log below {max(first_ids)}: {shown}",
            )
        )
    broken = verify_task(task_id, [logged for _, logged in events]).first_break
    if broken is not None and not (
        (broken.kind == "missing" and missing)
        or (broken.kind == "duplicate" and broken.sequence in duplicated)
    ):
        differences.append(
            Difference(
                task_id=task_id,
                source="log",
                kind="hash_chain",
                log=broken.expected,
                found=broken.found,
                detail=f"{broken.kind} at sequence {broken.sequence}: {broken.detail}",
            )
        )
    return differences


# --- reading the sources -----------------------------------------------------------------------

LogOrder = tuple[int, int, int]
"""(topic's place in ``TASK_TOPICS``, partition, offset): sorting by it gives a task's log order,
its submission (requests topic) first, then its events by offset, as :mod:`audit.log` reads it."""


@dataclass
class LogRead:
    """What reconcile keeps of the log: each task's events (for the summary and the chain check),
    the effect ledger, and how many records did not decode."""

    events: dict[str, list[tuple[LogOrder, str, LoggedEvent]]] = field(default_factory=dict)
    effects: EffectLedger = field(default_factory=EffectLedger)
    undecodable: int = 0

    def rows(self) -> Iterator[Row]:
        for task_id, found in self.events.items():
            for _, event_id, logged in found:
                yield task_id, logged.sequence, event_id

    def in_log_order(self, task_id: str) -> list[tuple[str, LoggedEvent]]:
        return [
            (event_id, logged) for _, event_id, logged in sorted(self.events[task_id], key=lambda e: e[0])
        ]


async def read_log(
    settings: Settings, codec: EventCodec, *, org: str | None = None, task: str | None = None
) -> LogRead:
    """Every task event on both task topics up to their current ends (filtered), and how many
    records did not decode. Requests to running tasks are not events and are skipped."""
    from projections.rebuild import LogReader

    topics = [spec.name(settings) for spec in TASK_TOPICS]
    read = LogRead()

    async def collect(batch: dict[TopicPartition, list[ConsumerRecord]]) -> int:
        for tp, records in batch.items():
            rank = topics.index(tp.topic)
            for record in records:
                try:
                    event = await codec.decode_record(record.value)
                except RegistryUnavailable:
                    raise
                except Exception:
                    # Reconcile only reads: parking the record is the live projectors' job.
                    read.undecodable += 1
                    continue
                if not isinstance(event, Event):
                    continue
                envelope = event.envelope
                if (org is None or envelope.org_id == org) and (task is None or envelope.task_id == task):
                    position = f"{tp.topic}:{tp.partition}:{record.offset}"
                    read.events.setdefault(envelope.task_id, []).append(
                        (
                            (rank, tp.partition, record.offset),
                            str(envelope.event_id),
                            LoggedEvent.of(event, position),
                        )
                    )
                    read.effects.add(event)
        return 0

    async with LogReader(settings, topics=topics) as reader:
        await reader.seek_start()
        await reader.read_until(await reader.end_offsets(), collect)
    return read


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
    effect_calls: Mapping[str, int] | None = None,
    in_flight: Collection[str] = frozenset(),
    counted_effects: Collection[str] = COUNTED_KINDS,
) -> ReconcileReport:
    """Compares the log with the Postgres and/or Elasticsearch projections of ``settings``'s
    deployment (its topic prefix and index alias), optionally of one org or task only, and checks
    each task's log itself (sequences, hash chain).

    With ``effect_calls`` (idempotency key -> calls a provider received under it), also checks the
    log's LLM and tool calls of the kinds in ``counted_effects`` against those counts; the keys in
    ``in_flight`` were under way at a crash and may have one call more (:func:`check_effects`).
    """
    registry = RegistryClient(settings.schema_registry_url)
    try:
        await registry.wait_until_ready()
        log = await read_log(settings, EventCodec(registry), org=org, task=task)
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
    report = compare(summarize_log(log.rows()), projections)
    report.differences = [
        *(
            difference
            for task_id in sorted(log.events)
            for difference in check_log(task_id, log.in_log_order(task_id))
        ),
        *report.differences,
    ]
    report.undecodable_records = log.undecodable
    if effect_calls is not None:
        recorded = log.effects.effects()
        scoped = None if org is None and task is None else set(log.events)
        report.effects_checked = sum(1 for effect in recorded.values() if effect.kind in counted_effects)
        report.effect_differences = check_effects(
            recorded, effect_calls, in_flight=in_flight, counted=counted_effects, tasks=scoped
        )
    return report
