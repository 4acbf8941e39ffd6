"""Re-execution over the recorded corpus (tests/corpus, the CI gate) and its divergence reports.

Given a recorded history, when today's decider re-decides every step from the recorded results,
then it emits the recorded payloads (unchanged code), or the report names the first event where a
changed rule decides differently.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from api.cli_reexecute import reexecute as reexecute_command
from audit.corpus import corpus_files, event_line, load_history, save_history
from audit.reexecute import decision_spans, field_differences, reexecute, starts_decision
from processors.task import decider
from schemas.events import Event, ExecutionMode
from tests.unit.processors.helpers import when
from tests.unit.processors.task.forking import answer, forked

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT / "tests" / "corpus"
HISTORIES = corpus_files(CORPUS)


def _history(name: str) -> list[Event]:
    return load_history(CORPUS / f"{name}.jsonl")


def _sequence_of(name: str, event_type: str) -> int:
    return next(e.sequence for e in _history(name) if e.event_type == event_type)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_unchanged_code_reexecutes_every_recorded_history(path: Path) -> None:
    events = load_history(path)
    report = reexecute(events)
    assert report.outcome == "passed", report.model_dump_json(indent=2)
    assert report.events == len(events)
    assert report.decisions == len(decision_spans(events)) > 0


def test_the_corpus_covers_the_runtime_paths() -> None:
    types = {e.event_type for path in HISTORIES for e in load_history(path)}
    assert {
        "PlanDecided",
        "SubtaskStarted",
        "ToolCallCompleted",
        "ToolCallDenied",
        "ApprovalGranted",
        "LlmCallFailed",
        "TaskCancelled",
        "BudgetExceeded",
    } <= types
    assert len(HISTORIES) >= 8


def test_a_history_file_reads_back_to_the_same_events(tmp_path: Path) -> None:
    events = _history("planned-parallel-subtasks")
    again = load_history(save_history(tmp_path / "copy.jsonl", events))
    assert again == events
    assert [event_line(e) for e in again] == (
        CORPUS / "planned-parallel-subtasks.jsonl"
    ).read_text().splitlines()


def test_an_approval_decision_includes_the_authorization_it_causes() -> None:
    events = _history("approval-granted")
    spans = [[events[i].event_type for i in range(start, end)] for start, end in decision_spans(events)]
    assert ["ApprovalGranted", "ToolCallAuthorized"] in spans
    assert ["ApprovalRequested"] in spans
    authorized = [e for e in events if e.event_type == "ToolCallAuthorized"]
    assert [starts_decision(e.payload) for e in authorized] == [False]


# -- a changed decision rule is caught at the exact event --------------------------------------


def test_a_changed_planning_threshold_diverges_at_task_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decider, "execution_mode", lambda score: ExecutionMode.SIMPLE)
    report = reexecute(_history("planned-parallel-subtasks"))
    assert report.outcome == "diverged"
    divergence = report.divergence
    assert divergence is not None
    assert (divergence.sequence, divergence.decision_sequence, divergence.command_type) == (1, 1, "StartTask")
    assert [(d.path, d.recorded, d.today) for d in divergence.differences] == [
        ("execution_mode", "STANDARD", "SIMPLE")
    ]
    # A direct answer's history is SIMPLE already: the changed rule does not touch it.
    assert reexecute(_history("single-step")).outcome == "passed"


def test_a_changed_token_estimate_diverges_at_the_budget_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decider, "ANSWER_TOKENS", 1024)
    report = reexecute(_history("task-budget-exceeded"))
    divergence = report.divergence
    assert divergence is not None
    assert divergence.sequence == _sequence_of("task-budget-exceeded", "BudgetExceeded")
    assert divergence.command_type == "StartTask"
    assert {d.path for d in divergence.differences} == {"requested_tokens"}


def test_tool_result_handling_that_stops_asking_the_model_diverges_where_the_request_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(decider, "_after_tool", lambda d, agent_id: None)
    events = _history("tool-denied")
    report = reexecute(events)
    divergence = report.divergence
    assert divergence is not None
    denied = _sequence_of("tool-denied", "ToolCallDenied")
    assert (divergence.decision_sequence, divergence.sequence) == (denied, denied + 1)
    assert divergence.command_type == "RecordPolicyDecision" and divergence.command["effect"] == "deny"
    assert divergence.recorded is not None and divergence.recorded.event_type == "LlmCallRequested"
    assert divergence.today is None


def test_an_edited_history_is_unreplayable_not_passed() -> None:
    events = _history("single-step")
    report = reexecute(events[1:])  # no submission
    assert report.outcome == "unreplayable" and "submission" in (report.error or "")


def test_field_differences_name_nested_paths() -> None:
    assert [d.path for d in field_differences({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]})] == ["a[1].b"]
    assert field_differences({"a": 1.0}, {"a": 1.0}) == []


# -- the CLI ---------------------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(reexecute_command)
    return app


def test_the_cli_reexecutes_the_committed_corpus() -> None:
    """What CI runs: ``agentlog reexecute --corpus tests/corpus`` exits 0 on unchanged code."""
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "reexecute", "--corpus", str(CORPUS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(HISTORIES)}/{len(HISTORIES)} tasks re-executed without divergence" in done.stdout


def test_the_cli_exits_1_with_the_divergence_when_a_rule_changed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(decider, "execution_mode", lambda score: ExecutionMode.SIMPLE)
    result = CliRunner().invoke(_cli(), ["--corpus", str(CORPUS), "--json"])
    assert result.exit_code == 1, result.output
    body = json.loads(result.stdout)
    failed = [r for r in body["reports"] if r["outcome"] != "passed"]
    planned = load_history(CORPUS / "planned-parallel-subtasks.jsonl")[0].task_id
    assert [(r["task_id"], r["divergence"]["sequence"]) for r in failed] == [(planned, 1)]
    assert body["passed"] is False


def test_the_cli_refuses_ambiguous_or_missing_sources(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(_cli(), []).exit_code == 2
    assert runner.invoke(_cli(), ["some-task", "--corpus", str(CORPUS)]).exit_code == 2
    assert runner.invoke(_cli(), ["--corpus", str(tmp_path)]).exit_code == 2  # no history there
    assert runner.invoke(_cli(), ["--corpus", str(CORPUS), "--since", "2026-01-01"]).exit_code == 2


def test_a_fork_re_executes_from_its_branch_point_and_a_changed_fork_rule_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The copied prefix is the source's decisions (re-executed with the source); the fork's own
    decisions start at TaskForked, which re-executes as the ForkTask command it records."""
    state, history, _ = forked(8, overrides={"max_steps": "6"})
    when(state, answer(state, "Forty-two."), history)
    forked_at = next(e.sequence for e in history if e.event_type == "TaskForked")
    assert forked_at == 8 and history[-1].event_type == "TaskCompleted"
    assert reexecute(history).outcome == "passed"

    # Today's code no longer re-requests what the prefix left pending: caught at the branch point.
    monkeypatch.setattr(decider, "_fork", lambda command, d: None)
    report = reexecute(history)
    assert report.outcome == "diverged" and report.divergence is not None
    assert report.divergence.sequence == forked_at
