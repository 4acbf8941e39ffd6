"""``agentlog policy check``: the processor's decision on a typed-in request, and loud bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from api.cli import app

runner = CliRunner()


def test_a_request_gets_the_decision_and_the_deciding_rule(tmp_path: Path) -> None:
    request = {
        "org_id": "acme",
        "user_id": "u",
        "role": "viewer",
        "tool": "python",
        "arguments": {"code": "1"},
    }
    result = runner.invoke(app, ["policy", "check", json.dumps(request)])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert (decision["effect"], decision["rule"]) == ("require_approval", "python-viewers-approval")
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request | {"role": None}))
    from_file = json.loads(runner.invoke(app, ["policy", "check", f"@{path}"]).output)
    assert (from_file["effect"], from_file["rule"]) == ("deny", "default-deny")


def test_an_org_override_applies_to_its_org_only(tmp_path: Path) -> None:
    (tmp_path / "acme.cedar").write_text(
        '@id("acme-no-calculator")\n@reason("acme does its own sums")\n'
        'forbid (principal, action, resource == Tool::"calculator");\n'
    )
    request = {"org_id": "acme", "user_id": "u", "tool": "calculator", "arguments": {"expression": "1+1"}}
    acme = json.loads(
        runner.invoke(app, ["policy", "check", json.dumps(request), "--policy-dir", str(tmp_path)]).output
    )
    other = json.loads(
        runner.invoke(
            app,
            ["policy", "check", json.dumps(request | {"org_id": "globex"}), "--policy-dir", str(tmp_path)],
        ).output
    )
    assert (acme["effect"], acme["rule"]) == ("deny", "acme-no-calculator")
    assert other["effect"] == "allow"


def test_bad_input_is_one_error_and_a_non_zero_exit(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["policy", "check", '{"org_id": "acme"}'])
    assert missing.exit_code == 1 and "user_id" in missing.output and "tool" in missing.output
    unreadable = runner.invoke(app, ["policy", "check", f"@{tmp_path / 'nope.json'}"])
    assert unreadable.exit_code == 1 and "nope.json" in unreadable.output
