"""The calculator tool: evaluates an arithmetic expression without ``eval``.

Only numbers, + - * / // % ** and parentheses are accepted; exponents and results are bounded so
a hostile expression cannot burn the worker's CPU or memory.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

from processors.tools.contract import ToolError, pure_tool

MAX_EXPRESSION_LENGTH = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 10**100


class CalculatorError(ToolError, ValueError):
    """The expression is not plain arithmetic, or its value is out of bounds."""


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}

PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "expression": {"type": "string", "description": "Arithmetic expression, e.g. (17 + 25) * 3"}
    },
    "required": ["expression"],
    "additionalProperties": False,
}
DESCRIPTION = "Evaluate an arithmetic expression (+ - * / // % ** and parentheses) exactly."


def evaluate(expression: str) -> int | float:
    """The value of ``expression``; raises :class:`CalculatorError` for anything but arithmetic."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from exc
    return _eval(tree.body)


def _eval(node: ast.AST) -> int | float:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _bounded(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {right} exceeds {MAX_EXPONENT}")
        try:
            return _bounded(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError as exc:
            raise CalculatorError("division by zero") from exc
        except OverflowError as exc:  # float arithmetic, e.g. 10.0 ** 999
            raise CalculatorError("result out of range") from exc
    raise CalculatorError(
        f"unsupported element {ast.dump(node)[:80]!r}: only numbers and arithmetic operators"
    )


def _bounded(value: int | float) -> int | float:
    if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
        raise CalculatorError("result out of range")
    return value


def run(arguments: dict[str, Any]) -> str:
    """Tool entry point: ``{"expression": "..."}`` -> the value as text."""
    expression = arguments.get("expression")
    if not isinstance(expression, str):
        raise CalculatorError("argument 'expression' (string) is required")
    value = evaluate(expression)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


TOOL = pure_tool("calculator", DESCRIPTION, PARAMETERS, run)
