"""The released schema set: every version of every event schema that has ever shipped.

``schemas/released/<record full name>.v<N>.avsc`` holds version N of a record, self-contained (named
types expanded), exactly as the registry would store it. History is replayed years later with
today's code, so today's schema of a record must read data written with *every* released version
(BACKWARD_TRANSITIVE, the registry's default): ``agentlog schemas check --released`` verifies that
offline, without a registry, and CI runs it. ``agentlog schemas release`` appends a version for
each record whose schema changed, and refuses a change that old data could not be read with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from schemas.registry.compatibility import DEFAULT_LEVEL, Level, incompatibilities
from schemas.serde import parsed_schema, record_fullnames

RELEASED_DIR = Path(__file__).parent / "released"
_VERSION_FILE = re.compile(r"^(?P<record>.+)\.v(?P<version>[1-9][0-9]*)\.avsc$")


class IncompatibleReleaseError(ValueError):
    """A schema change that data written with a released version could not be read with."""


@dataclass(frozen=True)
class ReleaseCheck:
    """The verdict on one record: ``new`` (never released), ``unchanged``, ``compatible`` (changed, reads
    every released version), ``incompatible``, or ``removed`` (released, gone from the tree)."""

    record: str
    status: str
    released_versions: int
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status not in ("incompatible", "removed")


def canonical(schema_text: str) -> str:
    """One spelling per schema: sorted keys, no whitespace (equal schemas compare equal)."""
    return json.dumps(json.loads(schema_text), sort_keys=True, separators=(",", ":"))


def working_tree_schemas() -> dict[str, str]:
    """record full name -> the working tree's self-contained schema, canonical."""
    return {record: canonical(json.dumps(parsed_schema(record))) for record in record_fullnames()}


def released_versions(directory: Path = RELEASED_DIR) -> dict[str, list[str]]:
    """record full name -> its released schema texts, version 1 first; gaps in numbering raise."""
    found: dict[str, dict[int, str]] = {}
    for path in directory.glob("*.avsc"):
        match = _VERSION_FILE.match(path.name)
        if match is None:
            raise ValueError(f"{path}: not named <record>.v<N>.avsc")
        found.setdefault(match["record"], {})[int(match["version"])] = canonical(path.read_text())
    result = {}
    for record, versions in sorted(found.items()):
        if sorted(versions) != list(range(1, len(versions) + 1)):
            raise ValueError(
                f"{directory}: versions of {record} are {sorted(versions)}, not 1..{len(versions)}"
            )
        result[record] = [versions[v] for v in range(1, len(versions) + 1)]
    return result


def check(
    local: Mapping[str, str], released: Mapping[str, list[str]], level: Level = Level(DEFAULT_LEVEL)
) -> list[ReleaseCheck]:
    """Each record of ``local`` and ``released`` judged at ``level`` (pure)."""
    results = []
    for record in sorted(set(local) | set(released)):
        versions = released.get(record, [])
        if record not in local:
            results.append(
                ReleaseCheck(
                    record, "removed", len(versions), ("released, but the working tree has no schema",)
                )
            )
        elif not versions:
            results.append(ReleaseCheck(record, "new", 0))
        elif canonical(local[record]) == versions[-1]:
            results.append(ReleaseCheck(record, "unchanged", len(versions)))
        else:
            problems = tuple(incompatibilities(level, local[record], versions))
            status = "incompatible" if problems else "compatible"
            results.append(ReleaseCheck(record, status, len(versions), problems))
    return results


def release(directory: Path = RELEASED_DIR, local: Mapping[str, str] | None = None) -> list[Path]:
    """Write the next version of every new or changed record of ``local`` (the working tree's by
    default) into ``directory``; writes nothing if any record fails the check."""
    local = working_tree_schemas() if local is None else local
    results = check(local, released_versions(directory))
    bad = [r for r in results if not r.ok]
    if bad:
        raise IncompatibleReleaseError(
            "; ".join(f"{r.record}: {r.status}: {' / '.join(r.problems)}" for r in bad)
        )
    written = []
    directory.mkdir(parents=True, exist_ok=True)
    for result in results:
        if result.status in ("new", "compatible"):
            path = directory / f"{result.record}.v{result.released_versions + 1}.avsc"
            path.write_text(json.dumps(json.loads(local[result.record]), indent=2) + "\n")
            written.append(path)
    return written
