"""The goals of issues 3 and 4, each a ratio or bound computed from the figures of one run."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Figures = dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    measured: str  # the measured ratio or value, as shown in the table
    met: bool | None  # None: a figure it needs was not measured in this run


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    judge: Callable[[Figures], Verdict]


def _num(figures: Figures, key: str) -> float | None:
    value = figures.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _ratio(numerator: str, denominator: str, at_least: float) -> Callable[[Figures], Verdict]:
    def judge(figures: Figures) -> Verdict:
        a, b = _num(figures, numerator), _num(figures, denominator)
        if a is None or b is None or b == 0:
            return Verdict("not measured", None)
        return Verdict(f"{a / b:.2f}x ({a:g} / {b:g})", a / b >= at_least)

    return judge


def _below(key: str, *others: str) -> Callable[[Figures], Verdict]:
    def judge(figures: Figures) -> Verdict:
        value = _num(figures, key)
        rivals = [(other, _num(figures, other)) for other in others]
        if value is None or any(v is None for _, v in rivals):
            return Verdict("not measured", None)
        shown = ", ".join(f"{name.rsplit('_', 1)[-1]} {v:g}" for name, v in rivals)
        return Verdict(f"{value:g} ms vs {shown}", all(value < v for _, v in rivals if v is not None))

    return judge


def _overhead(figures: Figures) -> Verdict:
    ours, theirs, floor = (
        _num(figures, "cpu_ms_per_step_platform"),
        _num(figures, "cpu_ms_per_step_langgraph"),
        _num(figures, "cpu_ms_per_step_nodurability"),
    )
    if ours is None or theirs is None or floor is None or theirs - floor <= 0:
        return Verdict("not measured", None)
    ratio = (ours - floor) / (theirs - floor)
    return Verdict(f"{ratio:.2f} ({ours - floor:.2f} / {theirs - floor:.2f} CPU-ms per step)", ratio <= 1 / 3)


def _unloaded(figures: Figures) -> Verdict:
    ours = _num(figures, "p50_unloaded_task_ms_k5")
    floor = _num(figures, "p50_unloaded_task_ms_k5_nodurability")
    peers = [_num(figures, f"p50_unloaded_task_ms_k5_{p}") for p in ("langgraph", "dbos")]
    if ours is None or floor is None or any(p is None for p in peers):
        return Verdict("not measured", None)
    met = ours <= 2 * floor and all(ours < p for p in peers if p is not None)
    shown = ", ".join(f"{p:g}" for p in peers if p is not None)
    return Verdict(f"{ours:g} ms; floor {floor:g} ({ours / floor:.2f}x); peers {shown}", met)


def _bound(
    key: str, *, below: float | None = None, at_least: float | None = None
) -> Callable[[Figures], Verdict]:
    def judge(figures: Figures) -> Verdict:
        value = _num(figures, key)
        if value is None:
            return Verdict("not measured", None)
        met = (below is None or value < below) and (at_least is None or value >= at_least)
        return Verdict(f"{value:g}", met)

    return judge


def _each_at_least(at_least: float, keys: dict[str, str]) -> Callable[[Figures], Verdict]:
    """Met when every figure (label -> key) reaches the bound: the LLM-call goals hold per event type."""

    def judge(figures: Figures) -> Verdict:
        values = {label: _num(figures, key) for label, key in keys.items()}
        if any(v is None for v in values.values()):
            return Verdict("not measured", None)
        shown = ", ".join(f"{label} {v:g}" for label, v in values.items())
        return Verdict(shown, all(v is not None and v >= at_least for v in values.values()))

    return judge


def _serde(direction: str) -> Callable[[Figures], Verdict]:
    return _each_at_least(
        100_000,
        {kind: f"serde_llm_{kind}_{direction}_per_s" for kind in ("requested", "completed")},
    )


GOALS: tuple[Goal, ...] = (
    Goal(
        "pipeline vs LangGraph, K=5 tasks/s",
        ">= 3x",
        _ratio("pipeline_tasks_per_s_k5", "langgraph_tasks_per_s_k5", 3),
    ),
    Goal(
        "pipeline vs DBOS, K=5 tasks/s", ">= 4x", _ratio("pipeline_tasks_per_s_k5", "dbos_tasks_per_s_k5", 4)
    ),
    Goal(
        "p99 at max load, K=5 (ms)",
        "below both peers",
        _below("pipeline_p99_ms_k5", "p99_task_ms_k5_langgraph", "p99_task_ms_k5_dbos"),
    ),
    Goal("framework CPU per step vs LangGraph's", "<= 1/3", _overhead),
    Goal("unloaded p50, K=5", "<= 2x no-durability, below both peers", _unloaded),
    Goal(
        "platform events/s vs raw aiokafka",
        ">= 50 %",
        _ratio("pipeline_events_per_s", "raw_aiokafka_events_per_s", 0.5),
    ),
    Goal(
        "p99 submit -> visible at half load (ms)",
        "< 100",
        _bound("p99_submit_to_visible_ms_half_load", below=100),
    ),
    Goal(
        "rebuild into Postgres (events/s)",
        ">= 20,000",
        _bound("rebuild_postgres_events_per_s", at_least=20_000),
    ),
    Goal("LLM-call events encoded per core (/s)", ">= 100,000 each", _serde("encode")),
    Goal("LLM-call events decoded per core (/s)", ">= 100,000 each", _serde("decode")),
    Goal("LLM-call events sealed per core (/s)", ">= 100,000 each", _serde("seal")),
)


def judge_all(figures: Figures) -> list[tuple[Goal, Verdict]]:
    return [(goal, goal.judge(figures)) for goal in GOALS]
