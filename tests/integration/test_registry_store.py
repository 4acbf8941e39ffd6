"""The registry's state survives a restart: schemas, ids, versions and compatibility settings."""

from __future__ import annotations

import uuid

from schemas.registry.compatibility import Level
from schemas.registry.store import SchemaStore
from schemas.serde import schema_json
from streams.admin import ensure_topics
from streams.settings import Settings
from streams.topics import SCHEMAS

RECORD = "agentlog.events.TaskSubmitted"


async def test_a_restarted_registry_serves_what_was_registered(stack: Settings) -> None:
    settings = stack.model_copy(update={"topic_prefix": f"test-registry-{uuid.uuid4().hex[:8]}"})
    await ensure_topics(settings)
    topic = SCHEMAS.name(settings)

    first = SchemaStore()
    await first.start(settings.kafka_bootstrap, topic)
    registered = await first.register("s1", schema_json(RECORD))
    await first.set_level("s1", Level.FULL)
    await first.set_level(None, Level.NONE)
    await first.stop()

    second = SchemaStore()
    await second.start(settings.kafka_bootstrap, topic)
    try:
        assert second.schema_by_id(registered.id) == registered.schema
        assert [v.version for v in second.versions("s1")] == [1]
        assert second.level("s1") is Level.FULL
        assert second.level() is Level.NONE
        # Idempotent after the restart: the same schema keeps its id and version.
        again = await second.register("s1", schema_json(RECORD))
        assert (again.id, again.version) == (registered.id, 1)
    finally:
        await second.stop()
