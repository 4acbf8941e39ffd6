"""The task settings a fork may change (``--set field=value``), and their parsing (pure).

Only settings that shape what the task does next are settable. Who the task runs as (org, user,
role), its identity and what it already did (history, usage) are not: a fork changes the future,
never the copied past or the permissions the policy decides on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from schemas.events import ModelTier


class ForkChangeError(ValueError):
    """A requested fork change names a field that is not settable, or a value it cannot take."""


def _positive_int(field: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ForkChangeError(f"{field}={value!r}: not an integer") from None
    if not 1 <= number <= 2**31 - 1:
        raise ForkChangeError(f"{field}={value!r}: must be between 1 and {2**31 - 1}")
    return number


def _token_budget(field: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ForkChangeError(f"{field}={value!r}: not an integer") from None
    if not 1 <= number <= 2**62:
        raise ForkChangeError(f"{field}={value!r}: must be between 1 and {2**62}")
    return number


def _tier(field: str, value: str) -> ModelTier:
    try:
        return ModelTier(value.upper())
    except ValueError:
        raise ForkChangeError(f"{field}={value!r}: one of {', '.join(t.value for t in ModelTier)}") from None


SETTABLE: dict[str, Callable[[str, str], Any]] = {
    "max_steps": _positive_int,
    "max_attempts": _positive_int,
    "max_parallel": _positive_int,
    "token_budget": _token_budget,
    "tier": _tier,
}


def parse_overrides(overrides: Mapping[str, str]) -> dict[str, Any]:
    """The typed state updates of ``overrides``; :class:`ForkChangeError` for anything not settable."""
    updates: dict[str, Any] = {}
    for field, value in overrides.items():
        parse = SETTABLE.get(field)
        if parse is None:
            raise ForkChangeError(
                f"{field!r} is not settable on a fork; settable: {', '.join(sorted(SETTABLE))}"
            )
        updates[field] = parse(field, value)
    return updates
