"""Creates the topics of the catalogue (idempotently) before any component uses them."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential

from streams.settings import Settings
from streams.topics import CATALOGUE

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings, *, timeout: float = 60.0) -> list[str]:
    """Create every catalogue topic that does not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(timeout), wait=wait_exponential(max=2), reraise=True
    ):
        with attempt:
            await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=spec.name(settings),
                num_partitions=spec.partition_count(settings),
                replication_factor=1,
                topic_configs=spec.config,
            )
            for spec in CATALOGUE
            if spec.name(settings) not in existing
        ]
        if missing:
            response = await admin.create_topics(missing)
            for name, code, *_ in getattr(
                response, "topic_errors", getattr(response, "topic_error_codes", [])
            ):
                # 36 = TOPIC_ALREADY_EXISTS: another process created it first, which is fine.
                if code not in (0, 36):
                    raise RuntimeError(f"creating topic {name} failed with Kafka error code {code}")
            log.info("created topics %s", [t.name for t in missing])
        return [t.name for t in missing]
    finally:
        await admin.close()
