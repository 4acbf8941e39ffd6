"""The prompt cache in Redis: exact-match and semantic.

Exact: the key is the SHA-256 of the tier, the offered tools, the response format and the whole
conversation (JSON as sent). Any answer is cached, tool calls included: the conversation is
identical, so the same next step is as valid as it was the first time.

Semantic: only for a conversation's first turn (system and user messages only) and only answers
without tool calls. The user text is embedded with the local model (:mod:`processors.llm.embedding`)
and compared by cosine with the entries of its scope (tier + tools + response format + system
prompt + the numbers in the user text); a hit needs cosine >= ``threshold``. Numbers are part of
the scope because a static embedding barely sees them: "Convert 5 miles to km" and "Convert 6
miles to km" embed at cosine 0.952, yet their answers differ. Later turns are excluded because the last user
message no longer determines the answer (a tool result or earlier answer does); tool-call answers
because their arguments are copied from the exact wording ("17 * 23" and "17 * 24" are close
neighbours, their tool calls are not interchangeable).

Entries live ``ttl`` seconds. A scope's entries are indexed by a sorted set (score = expiry),
bounded to ``max_semantic_entries`` newest, and scanned in full: Redis 7.0 here has no vector search
module, and a few hundred 256-d dot products take microseconds.

Redis down means misses (fail open): the call goes to a provider, an outage is logged once, and no
exception reaches the task.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.exceptions import RedisError

from processors.llm.embedding import MODEL_NAME, TextEmbedder
from schemas.events import CacheKind, ModelTier

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


class CachedAnswer(BaseModel):
    """A provider's answer as cached: its response body verbatim (usage included)."""

    model_config = ConfigDict(frozen=True)
    provider: str
    model: str
    response_json: str


@dataclass(frozen=True)
class CacheProbe:
    """What the cache needs to know about one call, computed once for lookup and store."""

    exact_key: str
    semantic_scope: str | None  # None: this conversation is not eligible for the semantic cache
    semantic_text: str | None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def probe_for(
    tier: ModelTier,
    tools: list[str],
    response_format_json: str | None,
    messages_json: str,
    pinned_model: str | None = None,
) -> CacheProbe:
    """The cache keys of a call (pure). A pinned model is part of them; unpinned calls keep the keys
    they always had, so existing cache entries stay valid."""
    head = json.dumps(
        [tier.value, sorted(tools), response_format_json, *([pinned_model] if pinned_model else [])]
    )
    exact = _digest("exact", head, messages_json)
    messages: list[dict[str, Any]] = orjson.loads(messages_json)
    roles = {m.get("role") for m in messages}
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    if not users or not roles <= {"system", "user"}:
        return CacheProbe(exact, None, None)
    system = json.dumps([m.get("content") for m in messages if m.get("role") == "system"])
    text = "\n".join(users)
    numbers = json.dumps(_NUMBER.findall(text))
    return CacheProbe(exact, _digest("semantic", MODEL_NAME, head, system, numbers), text)


class PromptCache:
    """Exact and semantic lookups and stores against one Redis database."""

    def __init__(
        self,
        redis: Redis,
        embedder: TextEmbedder,
        clock: Callable[[], float],
        ttl_seconds: int = 3600,
        threshold: float = 0.95,
        max_semantic_entries: int = 512,
        prefix: str = "agentlog:llmcache",
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self._redis = redis
        self._embedder = embedder
        self._clock = clock
        self._ttl = ttl_seconds
        self._threshold = threshold
        self._max_entries = max_semantic_entries
        self._prefix = prefix
        self._outage = False

    async def lookup(self, probe: CacheProbe) -> tuple[CacheKind, CachedAnswer] | None:
        """The cached answer for ``probe``: exact first, then semantic; None on a miss."""
        try:
            if probe.semantic_scope is None:
                # Most calls (every later turn): one plain GET; a pipeline object costs more than it saves.
                cached = await self._redis.get(f"{self._prefix}:exact:{probe.exact_key}")
                self._recovered()
                return (
                    (CacheKind.EXACT, CachedAnswer.model_validate_json(cached))
                    if cached is not None
                    else None
                )
            # One round trip for the exact key and the semantic scope's live entry ids.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(f"{self._prefix}:exact:{probe.exact_key}")
                if probe.semantic_scope is not None:
                    index = f"{self._prefix}:sem:{probe.semantic_scope}"
                    pipe.zremrangebyscore(index, "-inf", self._clock())
                    pipe.zrange(index, 0, -1)
                replies = await pipe.execute()
            if replies[0] is not None:
                self._recovered()
                return CacheKind.EXACT, CachedAnswer.model_validate_json(replies[0])
            hit = await self._semantic_lookup(probe, replies[2] if len(replies) == 3 else [])
            self._recovered()
        except RedisError as exc:
            self._failed(exc)
            return None
        return (CacheKind.SEMANTIC, hit) if hit is not None else None

    async def store(self, probe: CacheProbe, answer: CachedAnswer, has_tool_calls: bool) -> None:
        """Cache a provider's answer (semantically only when eligible, see the module doc)."""
        try:
            key, value = f"{self._prefix}:exact:{probe.exact_key}", answer.model_dump_json()
            scope, text = probe.semantic_scope, probe.semantic_text
            if scope is None or text is None or has_tool_calls:
                await self._redis.set(key, value, ex=self._ttl)
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.set(key, value, ex=self._ttl)
                    self._queue_semantic_store(pipe, scope, text, answer)
                    await pipe.execute()
            self._recovered()
        except RedisError as exc:
            self._failed(exc)

    async def _semantic_lookup(self, probe: CacheProbe, ids: list[bytes]) -> CachedAnswer | None:
        if not ids or probe.semantic_scope is None or probe.semantic_text is None:
            return None
        index = f"{self._prefix}:sem:{probe.semantic_scope}"
        entries = await self._redis.mget([f"{index}:{i.decode()}" for i in ids])
        live = [orjson.loads(e) for e in entries if e is not None]
        if not live:
            return None
        vectors = np.stack([np.frombuffer(base64.b64decode(e["vector"]), dtype=np.float32) for e in live])
        scores = vectors @ self._embedder.embed(probe.semantic_text)
        best = int(np.argmax(scores))
        if float(scores[best]) < self._threshold:
            return None
        return CachedAnswer.model_validate(live[best]["answer"])

    def _queue_semantic_store(self, pipe: Any, scope: str, text: str, answer: CachedAnswer) -> None:
        index = f"{self._prefix}:sem:{scope}"
        entry_id = _digest(text)[:24]
        vector = base64.b64encode(self._embedder.embed(text).tobytes()).decode()
        entry = orjson.dumps({"vector": vector, "answer": answer.model_dump()})
        pipe.set(f"{index}:{entry_id}", entry, ex=self._ttl)
        pipe.zadd(index, {entry_id: self._clock() + self._ttl})
        # Keep the newest entries only: the scan over a scope stays bounded.
        pipe.zremrangebyrank(index, 0, -(self._max_entries + 1))
        pipe.expire(index, self._ttl)

    def _failed(self, exc: RedisError) -> None:
        if not self._outage:
            self._outage = True
            log.warning("prompt cache unavailable, calls go to providers uncached: %s", exc)

    def _recovered(self) -> None:
        if self._outage:
            self._outage = False
            log.warning("prompt cache available again")
