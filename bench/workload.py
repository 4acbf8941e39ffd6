"""The one bench workload every contender runs: a task of K steps, each one LLM call + one tool call.

A task's user message carries ``[bench steps=K]``. The canned LLM server (:mod:`bench.llm_server`)
answers with a ``calculator`` tool call while fewer than K tool results are in the conversation,
and with a final answer after that. So a task is K x (LLM call -> tool call) and one closing LLM
call: K + 1 model calls and K tool calls, for the platform and every peer alike. The tool is the
platform's own calculator, so no contender gets a cheaper tool.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

TOOL_NAME = "calculator"
SYSTEM_PROMPT = "You are a bench agent. Call the calculator for every step, then answer."
_STEPS = re.compile(r"\[bench steps=(\d+)\]")

# The OpenAI tool spec every peer offers (the platform offers its registry's identical spec).
CALCULATOR_SPEC: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Evaluate one arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


# Unique per bench process: the platform's prompt cache (Redis, 1 h) must not answer a task of this
# run from an earlier run's identical conversation, which would flatter the figures.
RUN_ID = uuid.uuid4().hex[:8]


def task_query(steps: int, number: int) -> str:
    """The user message of bench task ``number`` with ``steps`` model+tool steps."""
    return f"[bench steps={steps}] run {RUN_ID} task {number}: add up the step numbers"


def steps_of(text: str) -> int:
    """K from a bench task's user message (0 when it is not a bench task)."""
    match = _STEPS.search(text)
    return int(match.group(1)) if match else 0


def model_calls(steps: int) -> int:
    """Model calls in a task of ``steps`` steps (one per step and the closing answer)."""
    return steps + 1


def canned_answer(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message the canned server returns for a conversation."""
    user = next((m for m in messages if m.get("role") == "user"), {"content": ""})
    steps = steps_of(str(user.get("content") or ""))
    done = sum(1 for m in messages if m.get("role") == "tool")
    if done < steps:
        step = done + 1
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{step}",
                    "type": "function",
                    "function": {
                        "name": TOOL_NAME,
                        "arguments": json.dumps({"expression": f"{step} * {step} + 1"}),
                    },
                }
            ],
        }
    return {"role": "assistant", "content": f"done after {done} steps"}


def run_tool(arguments_json: str) -> str:
    """Run the calculator exactly as the platform does (its own implementation)."""
    from processors.tools import calculator

    return calculator.run(json.loads(arguments_json))
