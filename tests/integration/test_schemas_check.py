"""``agentlog schemas check`` against the platform's registry."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from api.cli import app
from schemas.registry.check import check_subjects, local_schemas
from streams.settings import Settings


def test_the_working_tree_is_compatible_and_a_breaking_change_is_caught(
    platform: Settings, completed_task: dict[str, Any]
) -> None:
    schemas = local_schemas(platform)
    results = check_subjects(platform.schema_registry_url, schemas)
    assert {r.status for r in results} <= {"compatible", "new"}
    assert any(r.status == "compatible" for r in results)  # the completed task registered some

    subject = next(r.subject for r in results if r.status == "compatible")
    broken = json.loads(schemas[subject])
    broken["fields"].append({"name": "required_without_default", "type": "int"})
    [verdict] = check_subjects(platform.schema_registry_url, {subject: json.dumps(broken)})
    assert verdict.status == "incompatible"
    assert any("required_without_default" in p for p in verdict.problems)


def test_cli_exit_code_and_json(platform: Settings, completed_task: dict[str, Any]) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["schemas", "check", "--registry", platform.schema_registry_url, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows and all(row["status"] in ("compatible", "new") for row in rows)
    down = runner.invoke(app, ["schemas", "check", "--registry", "http://127.0.0.1:9"])
    assert down.exit_code != 0
