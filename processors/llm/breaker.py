"""A circuit breaker per provider, as a pure state machine (the clock reading is passed in).

CLOSED: calls flow; outcomes within the last ``window_seconds`` are kept. When at least
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


@dataclass(frozen=True)
class Breaker:
    status: BreakerStatus = BreakerStatus.CLOSED
    # (time, succeeded) of the calls in the window, oldest first; only used while CLOSED.
    outcomes: tuple[tuple[float, bool], ...] = field(default=())
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
            outcomes = (*(o for o in breaker.outcomes if o[0] > horizon), (now, succeeded))
            failures = sum(1 for _, ok in outcomes if not ok)
            if len(outcomes) >= policy.min_calls and failures / len(outcomes) > policy.failure_ratio:
                return Breaker(status=BreakerStatus.OPEN, since=now)
            return replace(breaker, outcomes=outcomes)
