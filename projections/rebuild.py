"""``agentlog rebuild``: a read model rebuilt from the log beside the live one, then swapped in.

The log (both task topics, kept forever) is read outside the projectors' consumer groups, by a
consumer that assigns itself every partition and seeks by hand; records are decoded and
undecodable ones dead-lettered by the same code as the live loop (:func:`decode_batch`), and the
events go through the same writers (:class:`TaskProjector`, the audit documents of
:mod:`projections.elastic`). The live projection keeps serving until the swap.

Postgres: the migrations are applied into a fresh schema and the log is projected into it; then,
in ONE transaction that holds the live tables locked, the rebuild catches up to the live
projector's stored offsets and every projection table moves: the live one into an archive schema,
the rebuilt one into the live schema (``ALTER TABLE ... SET SCHEMA``). See :func:`rebuild_postgres`
for why a live projector may keep running through it.

Elasticsearch: new monthly indices under a name the live index template does not match are filled,
then one ``update_aliases`` call moves the search alias to them and points a per-month *write
alias* (named like the live projector's monthly index) at each; see :func:`rebuild_elasticsearch`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from elasticsearch import AsyncElasticsearch
from elasticsearch.serializer import OrjsonSerializer
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from projections.elastic import MAPPINGS, AuditIndexProjector, ensure_index_template
from projections.migrate import migrate
from projections.postgres import TaskProjector
from projections.runner import projected_topics
from schemas.codec import EventCodec
from schemas.registry.client import RegistryClient
from streams.consumer import DeadLetterProjector, Decoded, Projector, decode_batch, decode_dead_letters
from streams.producer import EventProducer
from streams.settings import Settings
from streams.topics import DEAD_LETTER

log = logging.getLogger(__name__)

Target = Literal["postgres", "elasticsearch"]
TARGETS: tuple[Target, ...] = ("postgres", "elasticsearch")
# Tables the migrations create that are not folds of the log: they are never swapped (they stay
# where they are, in the live schema). api_keys is written by the API; schema_migrations records
# the migrations, which the live schema has too (the rebuild migrates it first).
NOT_PROJECTED = frozenset({"schema_migrations", "api_keys"})
# Filled from the dead-letter topic: a projection table only when the Postgres projector consumes
# that topic (``projected_topics``); otherwise it must not be swapped for an empty one.
DEAD_LETTER_TABLE = "dead_letters"

# (records done, records to do): the total grows when a catch-up pass finds new records.
ProgressCallback = Callable[[int, int], None]
_STALL_SECONDS = 60.0
_LOCK_TIMEOUT_MS = 5000
_SWAP_ATTEMPTS = 5


class RebuildError(RuntimeError):
    """A rebuild could not start or finish; the live read model was left as it was."""


class RebuildResult(BaseModel):
    """What a rebuild read, wrote and swapped (the CLI's ``--json`` output)."""

    target: Target
    mode: Literal["swap", "in_place"]
    records: int
    events: int
    seconds: float
    events_per_s: float
    start_offsets: dict[str, int]
    end_offsets: dict[str, int]
    serving: list[str]
    """The schema (Postgres) or indices (Elasticsearch) that now hold the live read model."""
    archived: list[str]
    """The replaced schema / indices, kept out of service (empty after ``--drop-old``)."""
    dropped: list[str]
    """Replaced schema / indices deleted: with ``--drop-old``, and (Elasticsearch) the projector's
    own monthly indices, whose names become the write aliases."""


async def rebuild(
    target: Target,
    settings: Settings,
    *,
    drop_old: bool = False,
    from_offset: int | None = None,
    from_time: datetime | None = None,
    on_progress: ProgressCallback | None = None,
) -> RebuildResult:
    """Rebuilds ``target`` (see :func:`rebuild_postgres`, :func:`rebuild_elasticsearch`)."""
    if target == "postgres":
        if from_offset is not None or from_time is not None:
            # The Postgres views are folds over each task's whole history (counts, sums, statuses),
            # and there are no stored states to start a fold at an offset from: re-applying part
            # of the log onto the live rows would only re-insert what the sequence key already
            # drops. So a Postgres rebuild always starts at offset 0.
            raise RebuildError(
                "--from-offset/--from-time apply to elasticsearch only: the Postgres read models are "
                "folds of whole task histories, so they are rebuilt from offset 0"
            )
        return await rebuild_postgres(settings, drop_old=drop_old, on_progress=on_progress)
    if target == "elasticsearch":
        return await rebuild_elasticsearch(
            settings, drop_old=drop_old, from_offset=from_offset, from_time=from_time, on_progress=on_progress
        )
    raise RebuildError(f"unknown rebuild target {target!r}; choose one of {TARGETS}")


def _stamp() -> str:
    # Sortable by time; the random tail keeps two rebuilds in one second apart.
    return f"{datetime.now(UTC):%Y%m%d%H%M%S}{uuid.uuid4().hex[:4]}"


def _offsets_json(offsets: Mapping[TopicPartition, int]) -> dict[str, int]:
    return {f"{tp.topic}:{tp.partition}": offset for tp, offset in sorted(offsets.items())}


class LogReader:
    """The task topics (and optionally others) read from chosen offsets, outside any consumer group."""

    def __init__(
        self,
        settings: Settings,
        *,
        topics: Sequence[str],
        on_progress: ProgressCallback | None = None,
        max_records: int = 5000,
    ) -> None:
        self._settings = settings
        self._topics = list(topics)
        self._on_progress = on_progress
        self._max_records = max_records
        self._consumer: AIOKafkaConsumer | None = None
        self.partitions: list[TopicPartition] = []
        self.records = 0
        self.events = 0
        self._total = 0

    async def __aenter__(self) -> LogReader:
        # Subscribing (without a group) makes the client load the topics' metadata at start; the
        # partitions are then assigned by hand (as streams.history does).
        consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=self._settings.kafka_bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        self._consumer = consumer
        for topic in self._topics:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer.stop()
                raise RebuildError(f"topic {topic} does not exist (is the topic prefix right?)")
            self.partitions += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.unsubscribe()
        consumer.assign(self.partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("LogReader used outside `async with`")
        return self._consumer

    async def seek_start(
        self, *, from_offset: int | None = None, from_time: datetime | None = None
    ) -> dict[TopicPartition, int]:
        """Seeks every partition to its first record, or to ``from_offset`` (the same offset in every
        partition, not before its first), or to its first record at or after ``from_time``."""
        beginning = await self.consumer.beginning_offsets(self.partitions)
        end = await self.consumer.end_offsets(self.partitions)
        start = dict(beginning)
        if from_offset is not None:
            start = {tp: min(max(from_offset, beginning[tp]), end[tp]) for tp in self.partitions}
        elif from_time is not None:
            stamp = int(from_time.timestamp() * 1000)
            found = await self.consumer.offsets_for_times(dict.fromkeys(self.partitions, stamp))
            start = {tp: found[tp].offset if found.get(tp) is not None else end[tp] for tp in self.partitions}
        # Explicit offsets: aiokafka's lazy seek_to_beginning, after end_offsets, lands at the end.
        for tp, offset in start.items():
            self.consumer.seek(tp, offset)
        return start

    async def end_offsets(self) -> dict[TopicPartition, int]:
        return dict(await self.consumer.end_offsets(self.partitions))

    async def positions(self) -> dict[TopicPartition, int]:
        return {tp: await self.consumer.position(tp) for tp in self.partitions}

    async def read_until(
        self,
        targets: Mapping[TopicPartition, int],
        write: Callable[[dict[TopicPartition, list[ConsumerRecord]]], Awaitable[int]],
    ) -> None:
        """Reads every partition at least up to its offset in ``targets``, handing each batch to
        ``write`` (which returns how many events it wrote)."""
        positions = await self.positions()
        self._total += sum(max(0, targets.get(tp, 0) - positions[tp]) for tp in self.partitions)
        self._report()
        last_progress = time.monotonic()
        while True:
            behind = [tp for tp in self.partitions if await self.consumer.position(tp) < targets.get(tp, 0)]
            if not behind:
                return
            batch = await self.consumer.getmany(*behind, timeout_ms=500, max_records=self._max_records)
            if not batch:
                if time.monotonic() - last_progress > _STALL_SECONDS:
                    raise RebuildError(
                        f"no records for {_STALL_SECONDS:.0f}s while behind on "
                        f"{', '.join(f'{tp.topic}:{tp.partition}' for tp in behind)}"
                    )
                continue
            last_progress = time.monotonic()
            read = sum(len(records) for records in batch.values())
            self.events += await write(batch)
            self.records += read
            # A partition read past its target (a catch-up finds new records) grows the total.
            self._total = max(self._total, self.records)
            self._report()

    def _report(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.records, self._total)


def projector_batch_writer(
    projector: Projector, codec: EventCodec, producer: EventProducer, *, consumer: str, dead_letter_topic: str
) -> Callable[[dict[TopicPartition, list[ConsumerRecord]]], Awaitable[int]]:
    """A ``LogReader`` writer that decodes a batch as the live loop does and writes it with its
    positions through ``projector``; returns the number of events handed over."""

    async def write(batch: dict[TopicPartition, list[ConsumerRecord]]) -> int:
        parked = {tp: records for tp, records in batch.items() if tp.topic == dead_letter_topic}
        rest = {tp: records for tp, records in batch.items() if tp.topic != dead_letter_topic}
        decoded, positions = await decode_batch(rest, codec, producer, consumer=consumer)
        if isinstance(projector, DeadLetterProjector):
            # As the live loop: a dead-letter record that does not decode itself is skipped.
            dead_letters, parked_positions, _skipped = await decode_dead_letters(parked, codec)
            positions |= parked_positions
            await projector.write(decoded, positions, dead_letters=dead_letters)
        else:
            await projector.write(decoded, positions)
        return len(decoded)

    return write


class _Log:
    """The registry client, codec and dead-letter producer a rebuild reads the log with."""

    def __init__(self, settings: Settings, source: str) -> None:
        self.registry = RegistryClient(settings.schema_registry_url)
        self.codec = EventCodec(self.registry)
        self.producer = EventProducer(settings, self.codec, source=source)

    async def __aenter__(self) -> _Log:
        await self.registry.wait_until_ready()
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()
        await self.registry.close()


def with_options(dsn: str, *options: str) -> str:
    """``dsn`` with ``options`` appended to its own ``options`` (later ``-c`` settings win)."""
    params = conninfo_to_dict(dsn)
    params["options"] = " ".join(str(o) for o in (params.get("options"), *options) if o)
    return make_conninfo("", **params)


async def _tables(conn: psycopg.AsyncConnection[Any], schema: str) -> set[str]:
    cursor = await conn.execute(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = %s AND table_type = 'BASE TABLE'",
        (schema,),
    )
    return {row[0] for row in await cursor.fetchall()}


async def rebuild_postgres(
    settings: Settings, *, drop_old: bool = False, on_progress: ProgressCallback | None = None
) -> RebuildResult:
    """Rebuilds every Postgres projection table from offset 0 into a new schema and swaps it in.

    The swap runs in one transaction that first takes ACCESS EXCLUSIVE locks on the live tables
    (``task_events`` first, the table every projector transaction writes first, so a live batch is
    either wholly before the swap or blocked until after it), reads the live projector's stored
    offsets, lets the rebuild catch up at least that far, then moves the tables. So the rebuilt
    tables hold everything the live ones did. A live projector may keep running: its blocked or
    later statements resolve the table names again after the swap and land in the rebuilt tables;
    its in-memory consumer position may be behind what the rebuild projected, and re-delivered
    events are dropped by the ``(task_id, sequence)`` key before they touch any view (so nothing
    is counted twice); ``projection_offsets`` moves with the rows, so a restarted projector
    resumes where the rebuild stopped.

    A schema serves one deployment (topic prefix): rows of other prefixes in it are not rebuilt.
    """
    live_dsn = settings.postgres_dsn
    # The live schema must be at the code's migration version: the rebuilt tables are, and its
    # schema_migrations (which stays) must then say so.
    await migrate(live_dsn)
    stamp = _stamp()
    async with await psycopg.AsyncConnection.connect(live_dsn, autocommit=True) as admin:
        row = await (await admin.execute("SELECT current_schema()")).fetchone()
        if row is None or row[0] is None:
            raise RebuildError("the DSN's search_path names no existing schema")
        live_schema = str(row[0])
        # Named after the live schema (cut so that the name stays within Postgres' 63 bytes).
        rebuild_schema, archive_schema = (
            f"{live_schema[:32]}_{kind}_{stamp}" for kind in ("rebuild", "archive")
        )
        await admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(rebuild_schema)))
    rebuild_dsn = with_options(live_dsn, f"-c search_path={rebuild_schema}")
    began = time.perf_counter()
    swapped = False
    try:
        await migrate(rebuild_dsn)
        # Exactly what the live Postgres projector consumes, so the rebuilt tables hold the same.
        topics = projected_topics("postgres", settings)
        dead_letters = DEAD_LETTER.name(settings) in topics
        not_projected = NOT_PROJECTED if dead_letters else NOT_PROJECTED | {DEAD_LETTER_TABLE}
        async with await psycopg.AsyncConnection.connect(live_dsn, autocommit=True) as admin:
            tables = sorted(await _tables(admin, rebuild_schema) - not_projected)
            missing = set(tables) - await _tables(admin, live_schema)
        if missing:
            raise RebuildError(f"live schema {live_schema} lacks tables {sorted(missing)}")
        # synchronous_commit=off: a crash loses the rebuild, not data (the live tables are untouched).
        pool = AsyncConnectionPool(
            with_options(rebuild_dsn, "-c synchronous_commit=off"), min_size=1, max_size=2, open=False
        )
        await pool.open(wait=True)
        consumer_name = f"{settings.topic_prefix}-rebuild-postgres"
        try:
            async with (
                _Log(settings, "/agentlog/rebuild-postgres") as source,
                LogReader(settings, topics=topics, on_progress=on_progress) as reader,
            ):
                write = projector_batch_writer(
                    TaskProjector(pool),
                    source.codec,
                    source.producer,
                    consumer=consumer_name,
                    dead_letter_topic=DEAD_LETTER.name(settings),
                )
                start = await reader.seek_start()
                end = await reader.end_offsets()
                await reader.read_until(end, write)
                # Catch up once outside the lock, so that the locked catch-up is short.
                await reader.read_until(await reader.end_offsets(), write)
                log.info("rebuilt %d records into %s; swapping", reader.records, rebuild_schema)
                for attempt in range(1, _SWAP_ATTEMPTS + 1):
                    try:
                        await _swap_tables(
                            live_dsn, live_schema, rebuild_schema, archive_schema, tables, reader, write
                        )
                        break
                    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
                        # Nothing was swapped (the transaction rolled back); what the rebuild
                        # projected meanwhile stays, so the next attempt only catches up.
                        log.warning("swap attempt %d of %d: %s", attempt, _SWAP_ATTEMPTS, exc)
                        if attempt == _SWAP_ATTEMPTS:
                            raise RebuildError(
                                f"could not lock the live tables of {live_schema} in {_SWAP_ATTEMPTS}"
                                f" attempts ({exc}); the live read model is unchanged"
                            ) from exc
                swapped = True
                end = await reader.positions()
        finally:
            await pool.close()
    finally:
        async with await psycopg.AsyncConnection.connect(live_dsn, autocommit=True) as admin:
            # After the swap it holds only what is never swapped; before it, an unfinished rebuild.
            await admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(rebuild_schema))
            )
            if swapped and drop_old:
                await admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(archive_schema)))
    seconds = time.perf_counter() - began
    return RebuildResult(
        target="postgres",
        mode="swap",
        records=reader.records,
        events=reader.events,
        seconds=round(seconds, 3),
        events_per_s=round(reader.events / seconds, 1) if seconds else 0.0,
        start_offsets=_offsets_json(start),
        end_offsets=_offsets_json(end),
        serving=[live_schema],
        archived=[] if drop_old else [archive_schema],
        dropped=[archive_schema] if drop_old else [],
    )


async def _swap_tables(
    live_dsn: str,
    live_schema: str,
    rebuild_schema: str,
    archive_schema: str,
    tables: Sequence[str],
    reader: LogReader,
    write: Callable[[dict[TopicPartition, list[ConsumerRecord]]], Awaitable[int]],
) -> None:
    live, rebuilt, archive = (sql.Identifier(s) for s in (live_schema, rebuild_schema, archive_schema))
    ordered = sorted(tables, key=lambda name: (name != "task_events", name))
    async with await psycopg.AsyncConnection.connect(live_dsn) as conn, conn.transaction():
        # Short: while this waits for a lock, every later reader of the table queues behind it, so
        # a long-running query would stall the API; better to give up and try again.
        await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT_MS}ms'")
        for table in ordered:
            await conn.execute(
                sql.SQL("LOCK TABLE {}.{} IN ACCESS EXCLUSIVE MODE").format(live, sql.Identifier(table))
            )
        cursor = await conn.execute(
            sql.SQL(
                "SELECT topic, partition, next_offset FROM {}.projection_offsets WHERE projector = %s"
            ).format(live),
            (TaskProjector.name,),
        )
        stored = {TopicPartition(t, p): o for t, p, o in await cursor.fetchall()}
        before = reader.records
        await reader.read_until({tp: stored[tp] for tp in reader.partitions if tp in stored}, write)
        log.info(
            "swap: live tables locked; caught up %d more records to the live offsets", reader.records - before
        )
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(archive))
        # All out, then all in: the tables' indexes keep their names, which are unique per schema.
        for table in ordered:
            await conn.execute(
                sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(live, sql.Identifier(table), archive)
            )
        for table in ordered:
            await conn.execute(
                sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(rebuilt, sql.Identifier(table), live)
            )


# --- Elasticsearch -----------------------------------------------------------------------------


def generation_prefix(prefix: str, stamp: str) -> str:
    """Index-name prefix of one rebuild: ``<prefix>_r<stamp>``, which the live template's pattern
    ``<prefix>-*`` does not match (the template would put the half-built indices behind the alias)."""
    return f"{prefix}_r{stamp}"


def month_of(index: str) -> str:
    """``YYYY.MM`` of a monthly index name (``<anything>-YYYY.MM``)."""
    return index.rsplit("-", 1)[1]


def swap_actions(
    prefix: str, serving: Sequence[str], write_aliases: Mapping[str, str], new_indices: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The ``update_aliases`` actions that put ``new_indices`` in service in place of ``serving``.

    ``serving``: the indices behind the search alias ``prefix``; ``write_aliases``: month alias ->
    index, left by an earlier rebuild. Each new index gets the search alias and the month's write
    alias ``<prefix>-YYYY.MM`` (the name the live projector writes to). An index of a month the
    rebuild produced leaves service; one of a month it did not produce (a month that began after
    the rebuild read the log) stays. The projector's own concrete monthly index carries the write
    alias's name, so it is deleted in the same atomic call; other replaced indices are archived.
    Returns (actions, archived indices, deleted indices).
    """
    months = {month_of(index) for index in new_indices}
    actions: list[dict[str, Any]] = []
    archived: list[str] = []
    deleted: list[str] = []
    for index in serving:
        if month_of(index) not in months:
            continue
        if index == f"{prefix}-{month_of(index)}":
            actions.append({"remove_index": {"index": index}})
            deleted.append(index)
        else:
            actions.append({"remove": {"index": index, "alias": prefix}})
            archived.append(index)
    for alias, index in write_aliases.items():
        if month_of(alias) in months and index not in deleted:
            actions.append({"remove": {"index": index, "alias": alias}})
    for index in new_indices:
        actions.append({"add": {"index": index, "alias": prefix}})
        actions.append(
            {"add": {"index": index, "alias": f"{prefix}-{month_of(index)}", "is_write_index": True}}
        )
    return actions, sorted(archived), sorted(deleted)


class _GenerationWriter:
    """Writes audit documents into one rebuild's monthly indices, creating each with the live
    mapping on first use (no template matches their names)."""

    name = "elasticsearch-rebuild"
    transient_errors: tuple[type[BaseException], ...] = AuditIndexProjector.transient_errors

    def __init__(self, client: AsyncElasticsearch, generation: str) -> None:
        self._client = client
        self._documents = AuditIndexProjector(client, generation)
        self._generation = generation
        self.indices: set[str] = set()

    async def load_positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    async def write(self, events: Sequence[Decoded], positions: dict[TopicPartition, int]) -> None:
        for month in {f"{d.event.envelope.occurred_at:%Y.%m}" for d in events}:
            index = f"{self._generation}-{month}"
            if index not in self.indices:
                await self._client.indices.create(
                    index=index,
                    mappings=MAPPINGS,
                    # Refreshing while bulk-loading only costs; done once before the swap.
                    settings={"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"},
                )
                self.indices.add(index)
        await self._documents.write(events, positions)


async def rebuild_elasticsearch(
    settings: Settings,
    *,
    drop_old: bool = False,
    from_offset: int | None = None,
    from_time: datetime | None = None,
    on_progress: ProgressCallback | None = None,
) -> RebuildResult:
    """Rebuilds the audit index from the log into new monthly indices and swaps the aliases.

    After the swap each rebuilt index is the write index of the alias ``<prefix>-YYYY.MM``, so the
    live projector's writes (addressed to that name) land in it, deduplicated by ``_id`` = event
    id; a month that begins later gets a plain index from the template as before. Documents the
    live projector wrote into a replaced index just before the swap are written again by one more
    catch-up after it. With ``from_offset`` / ``from_time`` there is no swap: the events from there
    on are re-indexed in place (same ``_id``s), repairing documents without touching the others.
    """
    prefix = settings.es_index_prefix
    in_place = from_offset is not None or from_time is not None
    client = AsyncElasticsearch(settings.elasticsearch_url, request_timeout=60, serializer=OrjsonSerializer())
    began = time.perf_counter()
    try:
        await ensure_index_template(client, prefix)
        live_writer = AuditIndexProjector(client, prefix)
        generation = _GenerationWriter(client, generation_prefix(prefix, _stamp()))
        consumer_name = f"{settings.topic_prefix}-rebuild-elasticsearch"
        async with (
            _Log(settings, "/agentlog/rebuild-elasticsearch") as source,
            LogReader(
                settings, topics=projected_topics("elasticsearch", settings), on_progress=on_progress
            ) as reader,
        ):

            def writer(projector: Projector) -> Callable[[dict[TopicPartition, list[Any]]], Awaitable[int]]:
                return projector_batch_writer(
                    projector,
                    source.codec,
                    source.producer,
                    consumer=consumer_name,
                    dead_letter_topic=DEAD_LETTER.name(settings),
                )

            start = await reader.seek_start(from_offset=from_offset, from_time=from_time)
            if in_place:
                await reader.read_until(await reader.end_offsets(), writer(live_writer))
                await client.indices.refresh(index=prefix, allow_no_indices=True, ignore_unavailable=True)
                serving, archived, deleted = await _serving(client, prefix), list[str](), list[str]()
            else:
                write = writer(generation)
                await reader.read_until(await reader.end_offsets(), write)
                await reader.read_until(await reader.end_offsets(), write)
                archived, deleted = await _swap_indices(client, prefix, sorted(generation.indices))
                # Whatever the live projector put into a replaced index before the swap was on the
                # log before now: written again, through the write aliases, into the new indices.
                await reader.read_until(await reader.end_offsets(), writer(live_writer))
                await client.indices.refresh(index=prefix)
                if drop_old and archived:
                    await client.indices.delete(index=",".join(archived))
                    deleted, archived = sorted(deleted + archived), []
                serving = await _serving(client, prefix)
            end = await reader.positions()
    finally:
        await client.close()
    seconds = time.perf_counter() - began
    return RebuildResult(
        target="elasticsearch",
        mode="in_place" if in_place else "swap",
        records=reader.records,
        events=reader.events,
        seconds=round(seconds, 3),
        events_per_s=round(reader.events / seconds, 1) if seconds else 0.0,
        start_offsets=_offsets_json(start),
        end_offsets=_offsets_json(end),
        serving=serving,
        archived=archived,
        dropped=deleted,
    )


async def _serving(client: AsyncElasticsearch, alias: str) -> list[str]:
    if not await client.indices.exists_alias(name=alias):
        return []
    return sorted((await client.indices.get_alias(name=alias)).body)


async def _swap_indices(
    client: AsyncElasticsearch, prefix: str, new_indices: Sequence[str]
) -> tuple[list[str], list[str]]:
    if not new_indices:
        raise RebuildError(f"the log holds no task events: nothing to swap into alias {prefix}")
    # The new indices were loaded without refreshes; searchable before they serve.
    await client.indices.put_settings(index=",".join(new_indices), settings={"refresh_interval": None})
    await client.indices.refresh(index=",".join(new_indices))
    serving = await _serving(client, prefix)
    write_aliases: dict[str, str] = {}
    month_alias_pattern = f"{prefix}-*"
    if await client.indices.exists_alias(name=month_alias_pattern):
        for index, entry in (await client.indices.get_alias(name=month_alias_pattern)).body.items():
            for alias in entry["aliases"]:
                # Another deployment's prefix may begin with ours: only ``<prefix>-YYYY.MM``.
                if re.fullmatch(rf"{re.escape(prefix)}-\d{{4}}\.\d{{2}}", alias):
                    write_aliases[alias] = index
    actions, archived, deleted = swap_actions(prefix, serving, write_aliases, new_indices)
    # One call: Elasticsearch applies all of it as one cluster-state change, so a search sees the
    # old indices or the new ones, never both or neither.
    await client.indices.update_aliases(actions=actions)
    return archived, deleted
