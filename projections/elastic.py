"""Elasticsearch audit index: every task event as a document, ``_id`` = event id.

Documents go to monthly indices (``<prefix>-YYYY.MM``, by the event's time) that an index template
puts behind one alias (``<prefix>``), which is what searches use. Elasticsearch cannot store Kafka
offsets transactionally with documents, so writes are idempotent (same ``_id``) and offsets are
committed to the consumer group only after the bulk request succeeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition
from elasticsearch import AsyncElasticsearch, ConnectionTimeout
from elasticsearch import ConnectionError as ElasticConnectionError
from elasticsearch.helpers import async_bulk

from streams.consumer import Decoded

_TEXT = {"type": "text"}
_KEYWORD = {"type": "keyword"}

MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "event_id": _KEYWORD,
        "event_type": _KEYWORD,
        "task_id": _KEYWORD,
        "org_id": _KEYWORD,
        "user_id": _KEYWORD,
        "correlation_id": _KEYWORD,
        "causation_id": _KEYWORD,
        "sequence": {"type": "long"},
        "occurred_at": {"type": "date"},
        "producer": _KEYWORD,
        "producer_version": _KEYWORD,
        "prev_hash": _KEYWORD,
        "digest": _KEYWORD,
        "kafka": {
            "properties": {"topic": _KEYWORD, "partition": {"type": "integer"}, "offset": {"type": "long"}}
        },
        # The payload is kept whole in _source; the fields people search are mapped explicitly.
        # messages_json holds only the messages a request adds (the prompt's system and user text),
        # so it is indexed once per message; response_json is not (its text is `content`).
        "payload": {
            "type": "object",
            "dynamic": False,
            "properties": {
                "query": _TEXT,
                "messages_json": _TEXT,
                "content": _TEXT,
                "arguments_json": _TEXT,
                "output": _TEXT,
                "result": _TEXT,
                "error": _TEXT,
                "reason": _TEXT,
                "rule": _KEYWORD,
                "agent_id": _KEYWORD,
                "subtask_id": _KEYWORD,
                "approval_id": _KEYWORD,
                "decided_by": _KEYWORD,
                "execution_mode": _KEYWORD,
                "tier": _KEYWORD,
                "kind": _KEYWORD,
                "status": _KEYWORD,
                "cache_hit": {"type": "boolean"},
                "quarantined": {"type": "boolean"},
                "findings": _KEYWORD,
                "tool": _KEYWORD,
                "model": _KEYWORD,
                "provider": _KEYWORD,
                "idempotency_key": _KEYWORD,
                "step": {"type": "integer"},
                "total_tokens": {"type": "long"},
                "cost_usd": {"type": "double"},
                "latency_ms": {"type": "double"},
            },
        },
    },
}


def index_for(prefix: str, decoded: Decoded) -> str:
    return f"{prefix}-{decoded.event.envelope.occurred_at:%Y.%m}"


def document(decoded: Decoded) -> dict[str, Any]:
    event = decoded.event
    envelope = event.envelope.model_dump(mode="json")
    return {
        **envelope,
        "event_type": event.event_type,
        "digest": event.digest,
        "kafka": {"topic": decoded.topic, "partition": decoded.partition, "offset": decoded.offset},
        "payload": event.payload.model_dump(mode="json"),
    }


async def ensure_index_template(client: AsyncElasticsearch, prefix: str) -> None:
    """Template for the monthly indices: explicit mapping, and the alias searches go through."""
    await client.indices.put_index_template(
        name=prefix,
        index_patterns=[f"{prefix}-*"],
        template={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": MAPPINGS,
            "aliases": {prefix: {}},
        },
        priority=100,
    )


class AuditIndexProjector:
    """Bulk-indexes task events into the audit index."""

    name = "elasticsearch"
    # Elasticsearch down or hung; the batch is indexed again (documents keyed by event id).
    transient_errors: tuple[type[BaseException], ...] = (ElasticConnectionError, ConnectionTimeout)

    def __init__(self, client: AsyncElasticsearch, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    async def load_positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    async def write(self, events: Sequence[Decoded], positions: dict[TopicPartition, int]) -> None:
        if not events:
            return
        actions = [
            {
                "_op_type": "index",
                "_index": index_for(self._prefix, decoded),
                "_id": str(decoded.event.envelope.event_id),
                "_source": document(decoded),
            }
            for decoded in events
        ]
        # Raises BulkIndexError on any failed item: offsets are then not committed and the batch
        # is delivered again after the restart.
        await async_bulk(self._client, actions, chunk_size=1000, refresh=False)
