"""Goal verdicts: met, missed, or not measured -- never a pass for a figure that is absent."""

from __future__ import annotations

from bench.goals import judge_all
from bench.measure import percentile


def _verdicts(figures: dict[str, float]) -> dict[str, bool | None]:
    return {goal.name: verdict.met for goal, verdict in judge_all(figures)}


def test_every_goal_is_not_measured_without_figures() -> None:
    assert set(_verdicts({}).values()) == {None}


def test_ratio_goals_compare_against_the_peer() -> None:
    verdicts = _verdicts(
        {"pipeline_tasks_per_s_k5": 90, "langgraph_tasks_per_s_k5": 30, "dbos_tasks_per_s_k5": 30}
    )
    assert verdicts["pipeline vs LangGraph, K=5 tasks/s"] is True
    assert verdicts["pipeline vs DBOS, K=5 tasks/s"] is False


def test_overhead_is_measured_above_the_no_durability_floor() -> None:
    figures = {
        "cpu_ms_per_step_platform": 3.0,
        "cpu_ms_per_step_langgraph": 8.0,
        "cpu_ms_per_step_nodurability": 1.0,
    }
    # (3 - 1) / (8 - 1) = 0.29 <= 1/3
    assert _verdicts(figures)["framework CPU per step vs LangGraph's"] is True
    figures["cpu_ms_per_step_platform"] = 4.0
    assert _verdicts(figures)["framework CPU per step vs LangGraph's"] is False


def test_bounds_and_nan() -> None:
    assert _verdicts({"p99_submit_to_visible_ms_half_load": 99.0})["p99 submit -> visible at half load (ms)"]
    assert (
        _verdicts({"rebuild_postgres_events_per_s": float("nan")})["rebuild into Postgres (events/s)"] is None
    )


def test_percentile_interpolates() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile([], 50) != percentile([], 50)  # NaN
