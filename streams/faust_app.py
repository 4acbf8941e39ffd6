"""faust wiring: the App every processor runs in. faust stays here, at the edge.

faust earns its keep for worker lifecycle, consumer-group membership and changelog-backed tables;
per-event hot paths (projections) use batched aiokafka instead (docs: PERFORMANCE-NOTES).
"""

from __future__ import annotations

from pathlib import Path

import faust

from streams.settings import Settings


def create_app(settings: Settings, *, app_id: str) -> faust.App:
    """A faust App on agentlog's broker: at-least-once, no web server, in-memory table store.

    Table state is rebuilt from the changelog on start (the changelog is the durable copy).
    """
    data_dir = Path(settings.faust_data_dir) / app_id
    data_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        # faust's exactly-once mode has open duplicate bugs; at-least-once + dedupe instead.
        processing_guarantee="at_least_once",
        # Records are acknowledged by hand when a task's run ends, which faust does not wait for
        # anyway; the processor stops its runs itself when partitions are revoked.
        stream_wait_empty=False,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        producer_acks=-1,
        # A worker that dies is noticed within 10 s, so its partitions (and tasks) move on quickly
        # (faust's default is 60 s); heartbeats every 3 s keep a live worker in the group.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        key_serializer="raw",
        value_serializer="raw",
    )
