"""Dead letters as a Postgres read model, written by the platform's own Postgres projector.

Garbage on the requests topic is parked by each of its consumers; the projector turns each
dead-letter record into one ``dead_letters`` row, keyed by the dead-letter record's position, so a
redelivery after a crash adds nothing. A dead-letter record that does not decode is skipped, never
dead-lettered again.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from psycopg_pool import AsyncConnectionPool

from projections.dead_letter_view import DeadLetterCursor
from projections.postgres import TaskQueries
from schemas.codec import EventCodec
from schemas.registry.client import RegistryClient
from streams.consumer import DeadLetter, read_dead_letter
from streams.settings import Settings
from streams.topics import DEAD_LETTER, REQUESTS
from tests.fixtures.platform import running_platform
from tests.integration.conftest import pg_rows, wait_for

GARBAGE = b"\x00\x00\x00\xff\xffthis is not avro either"
# The three consumers of the requests topic, each of which parks an undecodable record.
CONSUMERS = ("task-runner", "projector-postgres", "projector-elasticsearch")
ROWS = (
    "SELECT * FROM dead_letters WHERE source_topic = %s AND source_partition = %s AND source_offset = %s"
    " ORDER BY id"
)


@pytest.fixture(scope="module")
def platform_process(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, subprocess.Popen[bytes]]]:
    """A platform of this module's own, with its process (to find the projector's to kill)."""
    with running_platform(stack, tmp_path_factory.mktemp("agentlog-dead-letters")) as running:
        yield running


async def produce_raw(settings: Settings, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, value, key=key, headers=[("source", b"test")])
        return metadata.partition, metadata.offset
    finally:
        await producer.stop()


async def dead_letters_of(settings: Settings, source: tuple[str, int, int]) -> list[DeadLetter]:
    """The dead-letter records of ``source`` on the log, read as the projector reads them."""
    registry = RegistryClient(settings.schema_registry_url)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    partitions = [
        TopicPartition(DEAD_LETTER.name(settings), p) for p in range(DEAD_LETTER.partition_count(settings))
    ]
    consumer.assign(partitions)
    found: list[DeadLetter] = []
    try:
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    try:
                        dead_letter = await read_dead_letter(EventCodec(registry), record)
                    except Exception:
                        continue  # the undecodable one the other test puts there
                    parked = dead_letter.record
                    if (parked.source_topic, parked.source_partition, parked.source_offset) == source:
                        found.append(dead_letter)
    finally:
        await consumer.stop()
        await registry.close()
    return found


def rows_of(settings: Settings, source: tuple[str, int, int], count: int) -> list[dict[str, Any]]:
    return wait_for(
        lambda: (rows := pg_rows(settings, ROWS, *source)) and len(rows) >= count and rows,
        60,
        f"{count} dead_letters rows of {source}",
    )


def stored_offsets(settings: Settings, topic: str) -> dict[int, int]:
    rows = pg_rows(
        settings,
        "SELECT partition, next_offset FROM projection_offsets WHERE projector = 'postgres' AND topic = %s",
        topic,
    )
    return {row["partition"]: row["next_offset"] for row in rows}


def kill_postgres_projector(process: subprocess.Popen[bytes]) -> int:
    """SIGKILL the platform's Postgres projector (its supervisor restarts it); returns its pid."""
    (child,) = [
        child for child in psutil.Process(process.pid).children() if "projector-postgres" in child.cmdline()
    ]
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    return int(child.pid)


def test_each_dead_letter_is_one_row_with_its_source_position_and_reason_even_when_redelivered(
    platform_process: tuple[Settings, subprocess.Popen[bytes]],
) -> None:
    settings, process = platform_process
    topic = REQUESTS.name(settings)
    key = f"garbage-{uuid.uuid4()}".encode()
    partition, offset = asyncio.run(produce_raw(settings, topic, key, GARBAGE))
    source = (topic, partition, offset)

    rows = rows_of(settings, source, len(CONSUMERS))
    parked = asyncio.run(dead_letters_of(settings, source))
    assert len(parked) == len(CONSUMERS)
    assert sorted(next(c for c in CONSUMERS if row["consumer"].endswith(c)) for row in rows) == sorted(
        CONSUMERS
    )
    by_position = {(d.topic, d.partition, d.offset): d.record for d in parked}
    assert {(r["topic"], r["kafka_partition"], r["kafka_offset"]) for r in rows} == set(by_position)
    for row in rows:
        record = by_position[(row["topic"], row["kafka_partition"], row["kafka_offset"])]
        assert row["topic"] == DEAD_LETTER.name(settings)
        assert (row["dead_letter_id"], row["consumer"]) == (record.dead_letter_id, record.consumer)
        assert row["error_type"] in ("UnknownSchemaIdError", "WireFormatError")
        assert row["error"] == record.error and row["error"]
        assert (row["value"], row["value_size"]) == (GARBAGE, len(GARBAGE))
        assert row["value_sha256"] == hashlib.sha256(GARBAGE).hexdigest()
        assert (row["record_key"], row["headers"]) == (key, {"source": "test"})
        assert (row["org_id"], row["task_id"]) == (None, None)  # nothing in it names them

    # Redelivery through the real path: rewind the projector's stored dead-letter offsets and kill
    # it; its restart seeks to them and reads every dead-letter record again.
    dead_letter_topic = DEAD_LETTER.name(settings)
    ends = stored_offsets(settings, dead_letter_topic)
    assert sum(ends.values()) >= len(CONSUMERS)
    pg_rows(
        settings,
        "UPDATE projection_offsets SET next_offset = 0 WHERE projector = 'postgres' AND topic = %s"
        " RETURNING partition",
        dead_letter_topic,
    )
    killed = kill_postgres_projector(process)
    wait_for(
        lambda: all(stored_offsets(settings, dead_letter_topic).get(p, 0) >= end for p, end in ends.items()),
        60,
        f"the restarted projector (not pid {killed}) to read the dead-letter topic again",
    )
    again = pg_rows(settings, ROWS, *source)
    assert [(r["id"], r["dead_letter_id"]) for r in again] == [(r["id"], r["dead_letter_id"]) for r in rows]

    # And the listing pages over them newest first.
    async def listed() -> tuple[list[Any], list[Any]]:
        async with AsyncConnectionPool(settings.postgres_dsn, min_size=1, max_size=1, open=False) as pool:
            queries = TaskQueries(pool)
            everything = await queries.dead_letters(None, before=None, limit=10_000)
            first = await queries.dead_letters(None, before=None, limit=2)
            rest = await queries.dead_letters(None, before=DeadLetterCursor.of(first[-1]), limit=10_000)
            return everything, first + rest

    everything, paged = asyncio.run(listed())
    assert [e.id for e in paged] == [e.id for e in everything]
    keys = [(e.dead_lettered_at, e.id) for e in everything]
    assert keys == sorted(keys, reverse=True)
    assert {r["id"] for r in rows} <= {e.id for e in everything}


def test_an_undecodable_dead_letter_record_is_skipped_not_dead_lettered_again(
    platform_process: tuple[Settings, subprocess.Popen[bytes]],
) -> None:
    settings, _ = platform_process
    dead_letter_topic = DEAD_LETTER.name(settings)
    partition, offset = asyncio.run(produce_raw(settings, dead_letter_topic, b"junk", GARBAGE))

    # The projector moved past it (its stored next offset is beyond it) ...
    wait_for(
        lambda: stored_offsets(settings, dead_letter_topic).get(partition, 0) > offset,
        60,
        "the Postgres projector to move past the undecodable dead-letter record",
    )
    # ... without a row for it, and without parking it again (which would loop forever).
    assert not pg_rows(
        settings,
        "SELECT id FROM dead_letters WHERE topic = %s AND kafka_partition = %s AND kafka_offset = %s",
        dead_letter_topic,
        partition,
        offset,
    )
    assert asyncio.run(dead_letters_of(settings, (dead_letter_topic, partition, offset))) == []
