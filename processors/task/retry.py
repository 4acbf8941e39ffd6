"""Durable retries of failed effects: which failures are transient, and when to try again.

Exponential backoff with full jitter (AWS architecture blog's "full jitter": a uniform draw in
[0, min(cap, base * 2**(attempt-1))]), so that many tasks failing together do not retry together.
The random draw comes in as an argument: the schedule is recorded in the failure event
(``next_attempt_at``), so replay never re-draws it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Error types the gateway and the tools report that a later attempt may not hit again.
TRANSIENT = frozenset(
    {
        "APITimeoutError",
        "APIConnectionError",
        "RateLimitError",
        "InternalServerError",
        "ServiceUnavailable",
        "CircuitOpen",
        "AllProvidersFailed",
        "TimeoutException",
        "ConnectError",
        "ReadTimeout",
        "ConnectTimeout",
        "RemoteProtocolError",
    }
)


def is_transient(error_type: str) -> bool:
    return error_type in TRANSIENT


def backoff_seconds(attempt: int, draw: float, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Delay before attempt ``attempt + 1`` after attempt ``attempt`` failed; ``draw`` in [0, 1)."""
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), got {draw}")
    return draw * min(cap, base * 2 ** max(attempt - 1, 0))


def retry_at(now: datetime, attempt: int, draw: float, *, base: float = 0.5, cap: float = 30.0) -> datetime:
    return now + timedelta(seconds=backoff_seconds(attempt, draw, base=base, cap=cap))
