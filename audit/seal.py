"""``AuditSealed``: the Merkle root of each org's events of a UTC day, computed from the log and
written to ``<prefix>.audit``; and the auditor, the supervisor's component that seals each day once
it has ended.

Which events a seal covers: the org's task events whose envelope ``occurred_at`` falls on the day
(UTC), one per (task id, sequence) (the first copy on the log, as every consumer keeps), their
digests ordered by task id and sequence (:mod:`audit.merkle`). The log is read from the first
record written an hour before the day to the first written ``GRACE`` after it, which holds every
event of the day unless a producer's clock was off by more than that.

A day already sealed with the same root is not sealed again; a different root for a sealed day is
an error (the log changed under the seal) and is reported, never written over.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any

import fastavro
from aiokafka import AIOKafkaProducer

from audit.log import ProgressCallback, ReadStats, read_events, read_seals
from audit.merkle import ALGORITHM, LEAF_ORDER, day_root
from audit.verify import LoggedEvent, day_leaves, day_of
from schemas.codec import EventCodec
from schemas.events import AuditSealed
from schemas.serde import parsed_schema
from streams.admin import ensure_topics
from streams.headers import CONTENT_TYPE, SPEC_VERSION, new_traceparent
from streams.settings import Settings
from streams.topics import AUDIT

log = logging.getLogger(__name__)

SKEW = timedelta(hours=1)
"""How far a producer's clock (occurred_at) and the broker's (record timestamps) may differ."""
GRACE = timedelta(minutes=15)
"""How long after a day ends the auditor waits before sealing it (late writes of the day)."""
CHECK_EVERY_SECONDS = 300.0
# Fixed namespace: the same (org, day, root) is always the same seal id.
_SEAL_NAMESPACE = uuid.UUID("0f3c7f4e-4b8d-4f7a-9d0e-6a1f2c3b5d77")


class SealConflictError(RuntimeError):
    """The day is sealed already with another root: the log changed after it was sealed."""


@cache
def _schema() -> Any:
    return fastavro.parse_schema(parsed_schema(AuditSealed.fullname()))


def encode_seal(seal: AuditSealed) -> bytes:
    """The Avro body of a seal (the local schema)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _schema(), seal.model_dump(mode="python"))
    return buf.getvalue()


def decode_seal(body: bytes, writer_schema_text: str) -> AuditSealed:
    """A seal written with ``writer_schema_text``, resolved to the local schema."""
    writer = fastavro.parse_schema(json.loads(writer_schema_text))
    return AuditSealed.model_validate(fastavro.schemaless_reader(io.BytesIO(body), writer, _schema()))


def make_seal(
    org_id: str, day: str, leaves: Sequence[tuple[str, int, str]], *, now: datetime, sealed_by: str
) -> AuditSealed:
    """The seal of ``leaves`` (task id, sequence, digest): pure."""
    root = day_root(leaves)
    return AuditSealed(
        seal_id=uuid.uuid5(_SEAL_NAMESPACE, f"{org_id}/{day}/{root}"),
        org_id=org_id,
        day=day,
        events=len(leaves),
        tasks=len({task for task, _, _ in leaves}),
        root=root,
        algorithm=ALGORITHM,
        leaf_order=LEAF_ORDER,
        sealed_at=now,
        sealed_by=sealed_by,
    )


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


async def day_events(
    settings: Settings, codec: EventCodec, day: date, *, on_progress: ProgressCallback | None = None
) -> list[LoggedEvent]:
    """Every task event of ``day`` (all orgs), read from the records written around it."""
    start, end = day_bounds(day)
    found: list[LoggedEvent] = []
    wanted = day.isoformat()
    async for record in read_events(
        settings,
        codec,
        since=start - SKEW,
        until=end + max(SKEW, GRACE),
        stats=ReadStats(),
        on_progress=on_progress,
    ):
        event = LoggedEvent.of(record.event, record.position)
        if day_of(event) == wanted:
            found.append(event)
    return found


def seals_of_day(
    events: Sequence[LoggedEvent], day: date, *, now: datetime, sealed_by: str, org: str | None = None
) -> list[AuditSealed]:
    """One seal per org with events on ``day`` (or for ``org`` only, even with none): pure."""
    wanted = day.isoformat()
    orgs = sorted({e.org_id for e in events}) if org is None else [org]
    return [make_seal(o, wanted, day_leaves(events, o, wanted), now=now, sealed_by=sealed_by) for o in orgs]


class SealWriter:
    """Produces seals to the audit topic (acks=all), with CloudEvents headers like every record."""

    def __init__(self, settings: Settings, codec: EventCodec, *, source: str) -> None:
        self._settings, self._codec, self._source = settings, codec, source
        self._kafka: AIOKafkaProducer | None = None

    async def __aenter__(self) -> SealWriter:
        self._kafka = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap, acks="all", enable_idempotence=True
        )
        await self._kafka.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._kafka is not None:
            await self._kafka.stop()

    async def write(self, seal: AuditSealed) -> None:
        if self._kafka is None:
            raise RuntimeError("SealWriter used outside `async with`")
        topic = AUDIT.name(self._settings)
        value = await self._codec.encode_body(topic, seal.fullname(), encode_seal(seal))
        headers = {
            "ce_specversion": SPEC_VERSION,
            "ce_id": str(seal.seal_id),
            "ce_type": seal.fullname(),
            "ce_source": self._source,
            "ce_time": seal.sealed_at.isoformat().replace("+00:00", "Z"),
            "ce_subject": f"{seal.org_id}/{seal.day}",
            "content-type": CONTENT_TYPE,
            "traceparent": new_traceparent(),
        }
        await self._kafka.send_and_wait(
            topic,
            value=value,
            key=f"{seal.org_id}/{seal.day}".encode(),
            headers=[(name, text.encode()) for name, text in headers.items()],
        )


def plan(
    computed: Sequence[AuditSealed], existing: Sequence[AuditSealed]
) -> tuple[list[AuditSealed], list[AuditSealed], list[tuple[AuditSealed, AuditSealed]]]:
    """(to write, already sealed with the same root, sealed with another root) - pure."""
    sealed = {(s.org_id, s.day): s for s in existing}  # the latest seal of each day wins
    new, same, conflicts = [], [], []
    for seal in computed:
        old = sealed.get((seal.org_id, seal.day))
        if old is None:
            new.append(seal)
        elif old.root == seal.root and old.events == seal.events:
            same.append(old)
        else:
            conflicts.append((old, seal))
    return new, same, conflicts


class SealResult:
    def __init__(
        self,
        written: list[AuditSealed],
        unchanged: list[AuditSealed],
        conflicts: list[tuple[AuditSealed, AuditSealed]],
    ) -> None:
        self.written, self.unchanged, self.conflicts = written, unchanged, conflicts

    def as_json(self) -> dict[str, Any]:
        return {
            "written": [s.model_dump(mode="json") for s in self.written],
            "unchanged": [s.model_dump(mode="json") for s in self.unchanged],
            "conflicts": [
                {"sealed": old.model_dump(mode="json"), "log_now": new.model_dump(mode="json")}
                for old, new in self.conflicts
            ],
        }


async def seal_day(
    settings: Settings,
    codec: EventCodec,
    day: date,
    *,
    org: str | None = None,
    sealed_by: str,
    on_progress: ProgressCallback | None = None,
) -> SealResult:
    """Seal ``day`` for every org with events that day (or for ``org``): writes the seals of days not
    sealed yet; the ones sealed with another root come back as conflicts, unwritten."""
    await ensure_topics(settings)
    events = await day_events(settings, codec, day, on_progress=on_progress)
    computed = seals_of_day(events, day, now=datetime.now(UTC), sealed_by=sealed_by, org=org)
    new, same, conflicts = plan(computed, await read_seals(settings, codec))
    if new:
        async with SealWriter(settings, codec, source=sealed_by) as writer:
            for seal in new:
                await writer.write(seal)
    return SealResult(new, same, conflicts)


def due_day(now: datetime) -> date:
    """The last day the auditor may seal at ``now``: yesterday once ``GRACE`` has passed, else the
    day before."""
    return (now - GRACE).date() - timedelta(days=1)


async def run_auditor(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """The supervisor's ``auditor``: seals each ended day, then sleeps until the next check."""
    from schemas.registry.client import RegistryClient

    stop = stop or asyncio.Event()
    registry = RegistryClient(settings.schema_registry_url)
    source = f"/agentlog/{settings.topic_prefix}-auditor"
    try:
        await registry.wait_until_ready()
        codec = EventCodec(registry)
        sealed_through: date | None = None
        while not stop.is_set():
            day = due_day(datetime.now(UTC))
            if sealed_through != day:
                try:
                    result = await seal_day(settings, codec, day, sealed_by=source)
                except Exception:
                    log.exception("sealing %s failed; retrying in %.0fs", day, CHECK_EVERY_SECONDS)
                else:
                    sealed_through = day
                    for seal in result.written:
                        log.info(
                            "sealed %s %s: %d events, root %s", seal.org_id, seal.day, seal.events, seal.root
                        )
                    for old, new in result.conflicts:
                        log.critical(
                            "%s %s was sealed with root %s over %d events; the log now gives %s over %d",
                            old.org_id,
                            old.day,
                            old.root,
                            old.events,
                            new.root,
                            new.events,
                        )
            try:
                await asyncio.wait_for(stop.wait(), timeout=CHECK_EVERY_SECONDS)
            except TimeoutError:
                pass
    finally:
        await registry.close()
