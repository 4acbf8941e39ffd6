"""The released schema set: today's schemas must read every released version (BACKWARD_TRANSITIVE)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from schemas.releases import (
    IncompatibleReleaseError,
    check,
    release,
    released_versions,
    working_tree_schemas,
)

RECORD = "agentlog.events.TaskRejected"


def _with_field(text: str, field: dict[str, object]) -> str:
    schema = json.loads(text)
    schema["fields"].append(field)
    return json.dumps(schema)


def test_the_working_tree_keeps_the_committed_released_set_readable() -> None:
    results = check(working_tree_schemas(), released_versions())
    assert results and all(r.ok for r in results), [r for r in results if not r.ok]
    assert {r.record for r in results} >= set(working_tree_schemas())


def test_cli_check_released_passes_on_the_tree() -> None:
    result = CliRunner().invoke(app, ["schemas", "check", "--released", "--json"])
    assert result.exit_code == 0, result.output
    assert all(row["ok"] for row in json.loads(result.output))


def test_verdicts() -> None:
    local = working_tree_schemas()
    released = {RECORD: [local[RECORD]]}
    base = {RECORD: local[RECORD]}
    [unchanged] = check(base, released)
    assert unchanged.status == "unchanged"

    optional = _with_field(local[RECORD], {"name": "hint", "type": ["null", "string"], "default": None})
    [compatible] = check({RECORD: optional}, released)
    assert compatible.status == "compatible" and compatible.ok

    required = _with_field(local[RECORD], {"name": "code", "type": "int"})
    [incompatible] = check({RECORD: required}, released)
    assert incompatible.status == "incompatible" and not incompatible.ok
    assert any("code" in problem for problem in incompatible.problems)

    [removed] = check({}, released)
    assert removed.status == "removed" and not removed.ok
    [new] = check(base, {})
    assert new.status == "new" and new.ok


def test_transitive_an_old_version_still_counts() -> None:
    local = working_tree_schemas()
    v1 = local[RECORD]
    v2 = _with_field(v1, {"name": "code", "type": "int", "default": 0})
    # v3 drops the default again: readable against v2's data, not against v1's.
    v3 = _with_field(v1, {"name": "code", "type": "int"})
    [verdict] = check({RECORD: v3}, {RECORD: [v1, v2]})
    assert verdict.status == "incompatible"
    assert any("version 1" in problem for problem in verdict.problems)


def test_release_writes_versions_and_refuses_breaking_changes(tmp_path: Path) -> None:
    local = working_tree_schemas()
    first = release(tmp_path, {RECORD: local[RECORD]})
    assert [p.name for p in first] == [f"{RECORD}.v1.avsc"]
    assert release(tmp_path, {RECORD: local[RECORD]}) == []

    optional = _with_field(local[RECORD], {"name": "hint", "type": ["null", "string"], "default": None})
    assert [p.name for p in release(tmp_path, {RECORD: optional})] == [f"{RECORD}.v2.avsc"]
    assert len(released_versions(tmp_path)[RECORD]) == 2

    with pytest.raises(IncompatibleReleaseError, match="code"):
        release(tmp_path, {RECORD: _with_field(optional, {"name": "code", "type": "int"})})
    assert len(released_versions(tmp_path)[RECORD]) == 2


def test_a_gap_in_versions_is_an_error(tmp_path: Path) -> None:
    (tmp_path / f"{RECORD}.v2.avsc").write_text(working_tree_schemas()[RECORD])
    with pytest.raises(ValueError, match=r"are \[2\], not 1\.\.1"):
        released_versions(tmp_path)
