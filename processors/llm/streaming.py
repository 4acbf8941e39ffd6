"""Token streaming: a streamed completion's deltas go to Redis pub/sub while it is read, and the
chunks are folded back into one ordinary chat-completion body (what is recorded on Kafka).

Channel ``agentlog:stream:<task_id>``; each message is JSON ``{"step", "attempt", "delta"}`` and a
last ``{"step", "attempt", "done": true}``. A retried or fallen-back call streams again under a new
``attempt``: a client shows the latest attempt's text. Publishing is best effort (Redis down loses
the live view, never the call); the complete response is the record.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "agentlog:stream:"


def channel(task_id: str) -> str:
    return f"{CHANNEL_PREFIX}{task_id}"


def fold_chunks(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completion body equivalent to a stream of ``chat.completion.chunk`` objects (pure)."""
    if not chunks:
        raise ValueError("the provider's stream ended with no chunks")
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    usage: dict[str, Any] | None = None
    role = "assistant"
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            role = delta.get("role") or role
            if delta.get("content"):
                content.append(delta["content"])
            for part in delta.get("tool_calls") or ():
                call = calls.setdefault(
                    part.get("index", 0),
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = part.get("id") or call["id"]
                function = part.get("function") or {}
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": role, "content": "".join(content) if content else None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    first = chunks[0]
    return {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created", 0),
        "model": first.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish or "stop"}],
        "usage": usage or {},
    }


class TokenPublisher:
    """Publishes deltas of one call to its task's channel; failures are logged once per outage."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._outage = False

    async def publish(self, task_id: str, message: dict[str, Any]) -> None:
        try:
            await self._redis.publish(channel(task_id), orjson.dumps(message))
        except RedisError as exc:
            if not self._outage:
                self._outage = True
                log.warning("token streaming unavailable (the complete response is still recorded): %s", exc)
            return
        self._outage = False
