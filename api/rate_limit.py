"""Per-key request rate limits: a token bucket in Redis, shared by every API process.

One Lua script per request reads, refills and takes from the bucket atomically, using the Redis
server's clock (so API processes with skewed clocks agree). A bucket left alone expires once it
would be full again, so idle keys cost no memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis.asyncio import Redis

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

    async def take(self, subject: str, *, rate_per_second: float, burst: int) -> Decision:
        allowed, retry_ms, remaining = await self._take(
            keys=[f"{self._prefix}:ratelimit:{subject}"], args=[rate_per_second, burst]
        )
        return Decision(
            allowed=bool(allowed),
            # Retry-After is whole seconds; rounding down would invite a retry that fails again.
            retry_after_seconds=max(1, math.ceil(int(retry_ms) / 1000)) if not allowed else 0,
            remaining=int(remaining),
        )
