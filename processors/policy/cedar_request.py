"""A :class:`PolicyRequest` as a Cedar authorization request. Pure: no I/O, no Cedar call.

The shape every policy is written against (docs/policy.md):

- principal ``User::"<user_id>"``, member of ``Role::"<role>"`` (of none without a role), with
  attribute ``org``;
- action ``Action::"call"``; resource ``Tool::"<tool>"``;
- context ``{task, arguments, urls}``: ``arguments`` is the call's JSON arguments as Cedar values,
  ``urls`` holds, for each top-level string argument that is a plain absolute URL, its parsed
  ``{scheme, host, port, path}`` (Cedar has no string functions, so a host allow-list needs the
  host as its own attribute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import urlsplit

from pydantic import JsonValue

from processors.policy.decision import PolicyRequest

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
# Cedar's decimal: four fractional digits over a signed 64-bit integer.
DECIMAL_LIMIT = Decimal("922337203685477.5807")
DECIMAL_STEP = Decimal("0.0001")
MAX_DEPTH = 32
DEFAULT_PORTS = {"http": 80, "https": 443}

ACTION = {"type": "Action", "id": "call"}


class UnrepresentableArgumentError(ValueError):
    """An argument has no faithful Cedar value; the call is denied rather than judged on a guess."""


@dataclass(frozen=True)
class CedarCall:
    """What ``cedarpy.is_authorized`` takes: the request and the (per-request) entities."""

    request: dict[str, Any]
    entities: list[dict[str, Any]]


def cedar_call(request: PolicyRequest) -> CedarCall:
    """The Cedar request for ``request``; raises :class:`UnrepresentableArgumentError`."""
    principal = {"type": "User", "id": request.user_id}
    arguments = _record(request.arguments, "arguments", 0)
    context = {"task": request.task_id, "arguments": arguments, "urls": url_facts(request.arguments)}
    return CedarCall(
        request={
            "principal": principal,
            "action": ACTION,
            "resource": {"type": "Tool", "id": request.tool},
            "context": context,
        },
        entities=[
            {
                "uid": principal,
                "attrs": {"org": request.org_id},
                "parents": [{"type": "Role", "id": request.role}] if request.role is not None else [],
            }
        ],
    )


def cedar_value(value: JsonValue, path: str, depth: int = 0) -> Any:
    """``value`` as Cedar JSON; ``None`` for JSON null (the caller leaves it out)."""
    if depth > MAX_DEPTH:
        raise UnrepresentableArgumentError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not LONG_MIN <= value <= LONG_MAX:
            raise UnrepresentableArgumentError(f"{path}: integer {value} is outside Cedar's 64-bit range")
        return value
    if isinstance(value, float):
        return _number(value, path)
    if isinstance(value, list):
        elements = (cedar_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        return [element for element in elements if element is not None]
    if isinstance(value, dict):
        return _record(value, path, depth)
    raise UnrepresentableArgumentError(f"{path}: {type(value).__name__} is not a JSON value")


def _record(value: dict[str, JsonValue], path: str, depth: int) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, item in value.items():
        # Cedar's JSON reads {"__entity": ...} and {"__extn": ...} as entity and extension
        # references: a model-written argument must never turn into one.
        if key.startswith("__"):
            raise UnrepresentableArgumentError(f"{path}: key {key!r} (keys starting with '__' are reserved)")
        converted = cedar_value(item, f"{path}.{key}", depth + 1)
        if converted is not None:
            record[key] = converted
    return record


def _number(value: float, path: str) -> Any:
    # 30.0 and 30 must compare alike in a policy: integral values are Longs.
    if value.is_integer() and LONG_MIN <= value <= LONG_MAX:
        return int(value)
    if not math.isfinite(value) or abs(value) > DECIMAL_LIMIT:
        raise UnrepresentableArgumentError(f"{path}: number {value!r} is outside Cedar's range")
    decimal = Decimal(repr(value)).quantize(DECIMAL_STEP, rounding=ROUND_HALF_EVEN)
    return {"__extn": {"fn": "decimal", "arg": format(decimal, "f")}}


def url_facts(arguments: dict[str, JsonValue]) -> dict[str, dict[str, Any]]:
    """``{argument: {scheme, host, port?, path}}`` for each top-level argument that is a plain URL.

    Only URLs whose parse is unambiguous count: no credentials, whitespace, control characters or
    backslashes, which parsers disagree on (the fetching client could otherwise reach a different
    host from the one the policy saw). Anything else has no entry, and a policy that needs the
    host then cannot match.
    """
    facts: dict[str, dict[str, Any]] = {}
    for name, value in arguments.items():
        if isinstance(value, str) and "://" in value and not name.startswith("__"):
            parsed = _plain_url(value)
            if parsed is not None:
                facts[name] = parsed
    return facts


def _plain_url(url: str) -> dict[str, Any] | None:
    if "\\" in url or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    if not parts.scheme or not host or "@" in parts.netloc:
        return None
    scheme = parts.scheme.lower()
    fact: dict[str, Any] = {"scheme": scheme, "host": host, "path": parts.path or "/"}
    port = port if port is not None else DEFAULT_PORTS.get(scheme)
    if port is not None:
        fact["port"] = port
    return fact
