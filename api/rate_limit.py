"""Per-key request rate limits: a token bucket in Redis, shared by every API process.

One Lua script per request reads, refills and takes from the bucket atomically, using the Redis
server's clock (so API processes with skewed clocks agree). A bucket left alone expires once it
would be full again, so idle keys cost no memory.

Redis down or slow: the limiter fails open (see :meth:`RateLimiter.take`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Longest a request waits for its bucket: a hung Redis must not hang every authenticated request.
TAKE_TIMEOUT_SECONDS = 1.0

# KEYS[1] bucket; ARGV rate (tokens/s), burst (capacity). Returns {allowed, retry_after_ms, left}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed = 0
local retry_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {allowed, retry_ms, math.floor(tokens)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_seconds: int
    remaining: int


class RateLimiter:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._take = redis.register_script(_TAKE)
        self._unavailable = False  # so an outage is logged once, and its end once

    async def take(self, subject: str, *, rate_per_second: float, burst: int) -> Decision:
        """Takes one token from ``subject``'s bucket.

        Fails open: when Redis does not answer (down, or not within ``TAKE_TIMEOUT_SECONDS``) the
        request is allowed, and a warning is logged once per outage. Only authenticated callers get
        here, and the limit protects the platform from a noisy caller, not from strangers; failing
        closed would turn a Redis outage into an outage of the whole API (submissions and reads
        need no Redis). The budget ledger is the opposite case: it fails closed because it guards
        money (docs/llm-gateway.md).
        """
        try:
            allowed, retry_ms, remaining = await asyncio.wait_for(
                self._take(keys=[f"{self._prefix}:ratelimit:{subject}"], args=[rate_per_second, burst]),
                timeout=TAKE_TIMEOUT_SECONDS,
            )
        except (RedisError, TimeoutError) as exc:
            if not self._unavailable:
                self._unavailable = True
                log.warning(
                    "rate limits not enforced: Redis unavailable (%s: %s); allowing requests until it is"
                    " back",
                    type(exc).__name__,
                    exc,
                )
            return Decision(allowed=True, retry_after_seconds=0, remaining=burst)
        if self._unavailable:
            self._unavailable = False
            log.warning("rate limits enforced again: Redis is back")
        return Decision(
            allowed=bool(allowed),
            # Retry-After is whole seconds; rounding down would invite a retry that fails again.
            retry_after_seconds=max(1, math.ceil(int(retry_ms) / 1000)) if not allowed else 0,
            remaining=int(remaining),
        )
