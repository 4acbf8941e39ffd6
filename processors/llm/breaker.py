"""A circuit breaker per provider, as a pure state machine (the clock reading is passed in).

CLOSED: calls flow; outcomes within the last ``window_seconds`` are counted (per second). When at least
``min_calls`` are in the window and the failure ratio exceeds ``failure_ratio`` the breaker OPENs.
OPEN: calls are refused until ``cooldown_seconds`` have passed, then the next call is let through
as the single HALF_OPEN probe. A successful probe CLOSEs the breaker (with an empty window), a
failed one re-OPENs it. A probe that never reports (its task was cancelled) is replaced by a new
probe after another cool-down, so a breaker cannot stay stuck half-open.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum


class BreakerStatus(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    failure_ratio: float = 0.5
    min_calls: int = 4
    window_seconds: float = 30.0
    cooldown_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.failure_ratio < 1:
            raise ValueError(f"failure_ratio must be in (0, 1), got {self.failure_ratio}")
        if self.min_calls < 1:
            raise ValueError(f"min_calls must be >= 1, got {self.min_calls}")


# Outcomes are counted per second of the window, so recording one costs O(window seconds), not
# O(calls in the window) (at 150 calls/s a per-call tuple of the last 30 s was ~4,500 entries).
BUCKET_SECONDS = 1.0


@dataclass(frozen=True)
class Breaker:
    status: BreakerStatus = BreakerStatus.CLOSED
    # (bucket start, successes, failures) of the window's seconds, oldest first; used while CLOSED.
    outcomes: tuple[tuple[float, int, int], ...] = field(default=())
    # When the breaker opened, or when the current half-open probe was let through.
    since: float = 0.0


def available(breaker: Breaker, now: float, policy: BreakerPolicy) -> bool:
    """Whether :func:`allow` would let a call through now (for ordering, without taking the probe)."""
    return breaker.status is BreakerStatus.CLOSED or now - breaker.since >= policy.cooldown_seconds


def allow(breaker: Breaker, now: float, policy: BreakerPolicy) -> tuple[bool, Breaker]:
    """Whether a call may go to the provider now, and the breaker after deciding."""
    match breaker.status:
        case BreakerStatus.CLOSED:
            return True, breaker
        case BreakerStatus.OPEN | BreakerStatus.HALF_OPEN if now - breaker.since >= policy.cooldown_seconds:
            return True, Breaker(status=BreakerStatus.HALF_OPEN, since=now)
        case _:
            return False, breaker


def record(breaker: Breaker, succeeded: bool, now: float, policy: BreakerPolicy) -> Breaker:
    """The breaker after a call that was allowed finished (``succeeded`` or not)."""
    match breaker.status:
        case BreakerStatus.HALF_OPEN:
            return Breaker() if succeeded else Breaker(status=BreakerStatus.OPEN, since=now)
        case BreakerStatus.OPEN:
            # A call let through before the breaker opened reports late: it changes nothing.
            return breaker
        case _:
            horizon = now - policy.window_seconds
            kept = [bucket for bucket in breaker.outcomes if bucket[0] + BUCKET_SECONDS > horizon]
            start = now - now % BUCKET_SECONDS
            ok, failed = (1, 0) if succeeded else (0, 1)
            if kept and kept[-1][0] == start:
                _, successes, failures = kept[-1]
                kept[-1] = (start, successes + ok, failures + failed)
            else:
                kept.append((start, ok, failed))
            calls = sum(successes + failures for _, successes, failures in kept)
            failures_in_window = sum(failures for _, _, failures in kept)
            if calls >= policy.min_calls and failures_in_window / calls > policy.failure_ratio:
                return Breaker(status=BreakerStatus.OPEN, since=now)
            return replace(breaker, outcomes=tuple(kept))
