"""The tool registry: name -> JSON-schema description and implementation."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from processors.tools import calculator


class UnknownToolError(LookupError):
    """The model asked for a tool that is not registered."""


class ToolArgumentsError(ValueError):
    """The tool arguments are not a JSON object."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any]], str]
    # Pure and local (no side effect outside this process, same output for the same arguments):
    # the processor may run it before its request is durable and record both in one write, since
    # running it again after a crash changes nothing.
    pure: bool = False

    def openai_spec(self) -> dict[str, Any]:
        """The tool as offered to an OpenAI-compatible chat completion."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


TOOLS: dict[str, Tool] = {
    "calculator": Tool(
        "calculator", calculator.DESCRIPTION, calculator.PARAMETERS, calculator.run, pure=True
    ),
}


def get_tool(name: str) -> Tool:
    try:
        return TOOLS[name]
    except KeyError:
        raise UnknownToolError(f"no tool named {name!r}; registered: {sorted(TOOLS)}") from None


def parse_arguments(arguments_json: str) -> dict[str, Any]:
    try:
        arguments = json.loads(arguments_json or "{}")
    except json.JSONDecodeError as exc:
        raise ToolArgumentsError(f"tool arguments are not JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise ToolArgumentsError(f"tool arguments must be a JSON object, got {type(arguments).__name__}")
    return arguments
