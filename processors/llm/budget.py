"""The per-organisation daily USD budget ledger in Redis.

A call first *reserves* its estimated cost; the reservation is refused when it would take the day's
spend past the limit, so the call is never made. After the call, :meth:`BudgetLedger.settle`
replaces the estimate with the actual cost. Amounts are kept as integer micro-USD so concurrent
increments are exact. Decisions are one Lua script each, so they are atomic across processors.

A reservation carries the call's idempotency key: reserving again for the same key (a processor
that crashed and redoes the call) returns the original verdict without counting twice. The 80 %
alert is reported by exactly one reservation per org and day.

Redis down: the ledger fails *closed* (:class:`BudgetLedgerUnavailable`). A budget is a spending
guard; calling providers unmetered while the ledger is away would defeat it, whereas pausing the
task until Redis is back loses nothing.
"""

from __future__ import annotations

import math
from datetime import date

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streams.metrics import BUDGET_LIMIT, BUDGET_SPENT

ALERT_RATIO = 0.8
MICRO = 1_000_000
KEY_TTL_SECONDS = 3 * 86_400  # a day's ledger outlives the day for late settlements

# KEYS[1] ledger hash; ARGV: reservation id, estimate (micro-USD), limit (micro-USD), ttl.
# Returns {allowed, used_before, used_after, crossed_alert}.
_RESERVE = """
local key, rid, amount, limit = KEYS[1], 'r:' .. ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local previous = redis.call('HGET', key, rid)
if previous then
  local used = tonumber(redis.call('HGET', key, 'used') or '0')
  return {1, used - tonumber(previous), used, 0}
end
local used = tonumber(redis.call('HGET', key, 'used') or '0')
if used + amount > limit then
  return {0, used, used, 0}
end
local after = redis.call('HINCRBY', key, 'used', amount)
redis.call('HSET', key, rid, amount)
redis.call('EXPIRE', key, tonumber(ARGV[4]))
local crossed = 0
if after * 10 >= limit * 8 and redis.call('HSETNX', key, 'alerted', 1) == 1 then
  crossed = 1
end
return {1, used, after, crossed}
"""

# KEYS[1] ledger hash; ARGV: reservation id, actual cost (micro-USD). Returns the day's spend after.
_SETTLE = """
local key, rid, actual = KEYS[1], 'r:' .. ARGV[1], tonumber(ARGV[2])
local reserved = tonumber(redis.call('HGET', key, rid) or '0')
redis.call('HSET', key, rid, actual)
return redis.call('HINCRBY', key, 'used', actual - reserved)
"""


class BudgetLedgerUnavailable(RuntimeError):
    """Redis cannot be reached: no call may be made until the budget can be checked."""


class BudgetVerdict(BaseModel):
    """The outcome of a reservation (USD)."""

    model_config = ConfigDict(frozen=True)
    org_id: str
    day: date
    allowed: bool
    estimate_usd: float
    limit_usd: float
    used_before_usd: float
    used_after_usd: float
    crossed_80_percent: bool  # this reservation is the one that took the day past 80 % of the limit

    @property
    def exceeded(self) -> bool:
        return not self.allowed

    @property
    def reason(self) -> str:
        if self.allowed:
            return "within budget"
        return (
            f"org {self.org_id!r} daily budget {self.limit_usd:.6f} USD for {self.day.isoformat()} "
            f"would be exceeded: {self.used_before_usd:.6f} USD used, this call needs "
            f"~{self.estimate_usd:.6f} USD"
        )


def to_micro(usd: float) -> int:
    """USD as integer micro-USD, rounded up (an estimate never rounds to free)."""
    if usd < 0 or math.isnan(usd):
        raise ValueError(f"an amount must be a non-negative number of USD, got {usd}")
    return math.ceil(round(usd * MICRO, 6))


class BudgetLedger:
    def __init__(self, redis: Redis, prefix: str = "agentlog:budget") -> None:
        self._redis = redis
        self._prefix = prefix
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)

    def _key(self, org_id: str, day: date) -> str:
        return f"{self._prefix}:{org_id}:{day.isoformat()}"

    async def reserve(
        self, org_id: str, day: date, reservation_id: str, estimate_usd: float, limit_usd: float
    ) -> BudgetVerdict:
        """Reserve ``estimate_usd`` of ``org_id``'s ``day`` budget, unless that would exceed ``limit_usd``."""
        try:
            allowed, before, after, crossed = await self._reserve(
                keys=[self._key(org_id, day)],
                args=[reservation_id, to_micro(estimate_usd), to_micro(limit_usd), KEY_TTL_SECONDS],
            )
        except RedisError as exc:
            raise BudgetLedgerUnavailable(
                f"budget ledger unavailable for org {org_id!r} ({exc}); the call is not made"
            ) from exc
        # The day's spend as Redis holds it after this reservation (every processor's included).
        BUDGET_SPENT.labels(org=org_id).set(int(after) / MICRO)
        BUDGET_LIMIT.labels(org=org_id).set(limit_usd)
        return BudgetVerdict(
            org_id=org_id,
            day=day,
            allowed=bool(allowed),
            estimate_usd=estimate_usd,
            limit_usd=limit_usd,
            used_before_usd=int(before) / MICRO,
            used_after_usd=int(after) / MICRO,
            crossed_80_percent=bool(crossed),
        )

    async def settle(self, org_id: str, day: date, reservation_id: str, actual_usd: float) -> float:
        """Replace the reservation's estimate by the call's actual cost; the day's spend after (USD)."""
        try:
            used = await self._settle(
                keys=[self._key(org_id, day)], args=[reservation_id, to_micro(actual_usd)]
            )
        except RedisError as exc:
            raise BudgetLedgerUnavailable(
                f"budget ledger unavailable settling {reservation_id!r} for org {org_id!r}: {exc}"
            ) from exc
        BUDGET_SPENT.labels(org=org_id).set(int(used) / MICRO)
        return int(used) / MICRO

    async def spent(self, org_id: str, day: date) -> float:
        """The day's spend so far (reservations included), USD."""
        try:
            raw = await self._redis.hget(self._key(org_id, day), "used")
        except RedisError as exc:
            raise BudgetLedgerUnavailable(f"budget ledger unavailable for org {org_id!r}: {exc}") from exc
        return int(raw or 0) / MICRO
