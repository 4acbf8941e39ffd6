"""The calculator tool and the offline planner (pure parts)."""

from __future__ import annotations

import json

import pytest

from processors.llm.offline import LABEL, ChatRequest, answer, find_expression
from processors.tools.calculator import CalculatorError, evaluate, run


@pytest.mark.parametrize(
    ("expression", "value"),
    [("(17 + 25) * 3", 126), ("2**10", 1024), ("7 - -2", 9), ("7 / 2", 3.5), ("7 // 2", 3), ("10 % 4", 2)],
)
def test_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "unsupported"),
        ("1 / 0", "division by zero"),
        ("9 ** 9999", "exponent"),
        ("10 ** 999", "out of range"),
        ("1 +", "not an arithmetic"),
        ("x" * 501, "longer than"),
        ("True + 1", "unsupported"),
    ],
)
def test_calculator_refuses_anything_else(expression: str, message: str) -> None:
    with pytest.raises(CalculatorError, match=message):
        evaluate(expression)


def test_calculator_tool_output_is_text() -> None:
    assert run({"expression": "6 * 7.0"}) == "42"
    with pytest.raises(CalculatorError, match="required"):
        run({})


def test_offline_planner_calls_the_calculator_then_answers() -> None:
    tools = [{"type": "function", "function": {"name": "calculator"}}]
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "What is (17 + 25) * 3?"}]
    first = answer(ChatRequest(messages=messages, tools=tools))
    call = first["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"expression": "(17 + 25) * 3"}
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert answer(ChatRequest(messages=messages, tools=tools)) == first  # deterministic
    follow_up = [*messages, {"role": "assistant", "tool_calls": [call]}, {"role": "tool", "content": "126"}]
    second = answer(ChatRequest(messages=follow_up, tools=tools))
    assert second["choices"][0]["message"]["content"] == f"{LABEL} The result is 126."


def test_offline_planner_labels_plain_answers() -> None:
    reply = answer(ChatRequest(messages=[{"role": "user", "content": "Summarise the week"}]))
    assert reply["choices"][0]["message"]["content"].startswith(LABEL)
    assert find_expression("no numbers here") is None
