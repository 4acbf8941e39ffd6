"""Orchestration rules: complexity analysis, execution modes, the planner's contract, prompts.

Pure functions of their arguments. The complexity score is a deterministic reading of the query
(how many distinct things it asks, how much analysis its words call for), so that re-executing a
recorded task with today's code gives the same mode; the plan itself comes from the planner (an
LLM call with a JSON-schema response) and is validated here into a DAG.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from schemas.events import ExecutionMode, ModelTier, Subtask

SIMPLE_BELOW = 0.3
STANDARD_BELOW = 0.7
AGENTS = {ExecutionMode.SIMPLE: (1, 1), ExecutionMode.STANDARD: (2, 3), ExecutionMode.COMPLEX: (3, 5)}

SYSTEM_PROMPT = (
    "You are an agentlog agent. Answer the user's task. When arithmetic is needed, call the "
    "`calculator` tool with a single expression instead of computing it yourself."
)
PLANNER_PROMPT = (
    "You are the planner of an agentlog team. Split the user's task into subtasks for other agents. "
    "Answer only with JSON matching the response schema: each subtask has an id, a self-contained "
    "description, the role of the agent that should do it, and the ids of the subtasks whose results "
    "it needs (depends_on). Independent subtasks run in parallel."
)
MERGE_PREFIX = "Combine the results of the subtasks into one answer to the task."

PLAN_SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "plan",
        "strict": True,
        "schema": {
            "type": "object",
            "additionalProperties": False,
            "required": ["subtasks"],
            "properties": {
                "rationale": {"type": "string"},
                "subtasks": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["id", "description", "agent", "depends_on"],
                        "properties": {
                            "id": {"type": "string"},
                            "description": {"type": "string"},
                            "agent": {"type": "string"},
                            "depends_on": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}
PLAN_SCHEMA_JSON = json.dumps(PLAN_SCHEMA, separators=(",", ":"), sort_keys=True)

# Words that call for analysis rather than lookup, and separators of distinct requests.
_ANALYTIC = re.compile(
    r"\b(compare|contrast|analy[sz]e|evaluate|research|design|plan|investigate|summari[sz]e|"
    r"explain why|trade-?offs?|pros and cons|step[- ]by[- ]step)\b",
    re.IGNORECASE,
)
_PARTS = re.compile(r"(?<=[?.!;])\s+|\s+(?:and then|then|also)\s+|\n+\s*(?:\d+[.)]|[-*])\s+", re.IGNORECASE)


def request_parts(query: str) -> list[str]:
    """The distinct requests in ``query``: sentences, ``;``-separated clauses, list items."""
    return [part.strip(" ;") for part in _PARTS.split(query.strip()) if part and part.strip(" ;")]


def complexity(query: str) -> float:
    """A score in [0, 1]: 0.2 per request beyond the first, up to 0.3 for analytic wording, and up
    to 0.2 for length (a 300-word query)."""
    parts = len(request_parts(query))
    analytic = min(len(_ANALYTIC.findall(query)) * 0.1, 0.3)
    length = min(len(query.split()) / 300 * 0.2, 0.2)
    return round(min(1.0, 0.2 * max(parts - 1, 0) + analytic + length), 3)


def execution_mode(score: float) -> ExecutionMode:
    if score < SIMPLE_BELOW:
        return ExecutionMode.SIMPLE
    if score < STANDARD_BELOW:
        return ExecutionMode.STANDARD
    return ExecutionMode.COMPLEX


def initial_messages(query: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": query}]


def planner_messages(query: str, mode: ExecutionMode) -> list[dict[str, Any]]:
    low, high = AGENTS[mode]
    return [
        {"role": "system", "content": f"{PLANNER_PROMPT} Use {low} to {high} subtasks."},
        {"role": "user", "content": query},
    ]


def subtask_messages(subtask: Subtask, inputs: Sequence[tuple[Subtask, str]]) -> list[dict[str, Any]]:
    """The sub-agent's prompt: its part of the work, and the results of the subtasks it depends on."""
    text = subtask.description
    if inputs:
        text += "\n\nResults you can use:\n" + "\n".join(
            f"- {s.subtask_id} ({s.description}): {r}" for s, r in inputs
        )
    system = f"You are the {subtask.agent} agent of an agentlog team. Do only your part of the task. "
    return [{"role": "system", "content": system + SYSTEM_PROMPT}, {"role": "user", "content": text}]


def merge_message(query: str, results: Sequence[tuple[Subtask, str]]) -> dict[str, Any]:
    lines = "\n".join(f"- {s.subtask_id} ({s.description}): {r}" for s, r in results)
    return {"role": "user", "content": f"{MERGE_PREFIX}\nTask: {query}\nResults:\n{lines}"}


class PlanError(ValueError):
    """The planner's answer is not a usable plan (bad JSON, unknown dependency, a cycle)."""


def parse_plan(content: str | None, mode: ExecutionMode, tier: ModelTier) -> tuple[list[Subtask], str | None]:
    """The planner's JSON answer as a validated DAG of at most the mode's agent count."""
    try:
        data = json.loads(content or "")
    except json.JSONDecodeError as exc:
        raise PlanError(f"the plan is not JSON: {exc}") from exc
    raw = data.get("subtasks") if isinstance(data, dict) else None
    if not isinstance(raw, list) or not raw:
        raise PlanError("the plan has no subtasks list")
    _, most = AGENTS[mode]
    subtasks: list[Subtask] = []
    for index, item in enumerate(raw[:most]):
        if not isinstance(item, dict) or not str(item.get("description") or "").strip():
            raise PlanError(f"subtask {index} has no description")
        deps = item.get("depends_on") or []
        if not isinstance(deps, list):
            raise PlanError(f"subtask {index}: depends_on is not a list")
        subtasks.append(
            Subtask(
                subtask_id=str(item.get("id") or f"s{index + 1}"),
                description=str(item["description"]).strip(),
                agent=str(item.get("agent") or "assistant"),
                depends_on=[str(d) for d in deps],
                tier=tier,
            )
        )
    ids = [s.subtask_id for s in subtasks]
    if len(set(ids)) != len(ids):
        raise PlanError(f"duplicate subtask ids in {ids}")
    if "main" in ids:
        raise PlanError("a subtask may not be called 'main'")
    for subtask in subtasks:
        unknown = set(subtask.depends_on) - set(ids)
        if unknown:
            raise PlanError(f"subtask {subtask.subtask_id} depends on unknown {sorted(unknown)}")
    _check_acyclic(subtasks)
    rationale = data.get("rationale") if isinstance(data.get("rationale"), str) else None
    return subtasks, rationale


def _check_acyclic(subtasks: Sequence[Subtask]) -> None:
    done: set[str] = set()
    remaining = {s.subtask_id: set(s.depends_on) for s in subtasks}
    while remaining:
        ready = [sid for sid, deps in remaining.items() if deps <= done]
        if not ready:
            raise PlanError(f"the plan has a dependency cycle among {sorted(remaining)}")
        for sid in ready:
            done.add(sid)
            del remaining[sid]


def single_subtask_plan(query: str, tier: ModelTier) -> list[Subtask]:
    """The plan used when the planner's answer is unusable: the whole task as one subtask."""
    return [Subtask(subtask_id="s1", description=query, agent="assistant", depends_on=[], tier=tier)]
