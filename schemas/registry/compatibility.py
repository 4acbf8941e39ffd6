"""Schema compatibility, as Confluent's registry defines the levels, checked by the ``avro`` package.

Pure functions of schema texts. BACKWARD: the new schema (as reader) reads data written with the
latest registered one; FORWARD: the latest (as reader) reads data written with the new one;
FULL: both. The ``_TRANSITIVE`` levels check against every registered version, not just the
latest. agentlog defaults to BACKWARD_TRANSITIVE: history is replayed years later with today's
schemas, so today's schema must read every event ever written.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

DEFAULT_LEVEL = "BACKWARD_TRANSITIVE"


class Level(StrEnum):
    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"


def _problems(reader: avro.schema.Schema, writer: avro.schema.Schema, what: str) -> list[str]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted(str(kind.value) for kind in result.incompatibilities))
    where = ", ".join(sorted(result.locations))
    names = ", ".join(sorted(str(message) for message in result.messages))
    return [f"{what}: {kinds} at {where} ({names})"]


def incompatibilities(level: Level, new: str, registered: Sequence[str]) -> list[str]:
    """Why ``new`` may not follow ``registered`` (oldest first) at ``level``; empty when it may."""
    if level is Level.NONE or not registered:
        return []
    candidate = avro.schema.parse(new)
    transitive = level.value.endswith("_TRANSITIVE")
    against = list(enumerate(registered, start=1))
    if not transitive:
        against = against[-1:]
    problems: list[str] = []
    for version, text in against:
        existing = avro.schema.parse(text)
        if level.value.startswith(("BACKWARD", "FULL")):
            problems += _problems(candidate, existing, f"new schema cannot read version {version}")
        if level.value.startswith(("FORWARD", "FULL")):
            problems += _problems(existing, candidate, f"version {version} cannot read the new schema")
    return problems
