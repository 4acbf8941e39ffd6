"""Tool factories that the plugin tests expose through a fake installed distribution."""

from __future__ import annotations

from typing import Any

from processors.tools.contract import Tool, ToolContext, ToolOutput


async def _shout(arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
    return ToolOutput(text=f"{arguments['text'].upper()} (task {context.task_id})")


def shout_tool() -> Tool:
    return Tool(
        name="shout",
        description="Upper-cases its text.",
        parameters={
            "type": "object",
            "properties": {"text": {"type": "string", "maxLength": 20}},
            "required": ["text"],
            "additionalProperties": False,
        },
        invoke=_shout,
    )


async def _crash(arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
    raise KeyError("plugin bug")


def crashing_tool() -> Tool:
    return Tool("crash", "Always fails.", {"type": "object"}, _crash)


def not_a_tool() -> str:
    return "shout"


def failing_factory() -> Tool:
    raise RuntimeError("cannot reach the plugin's backend")


def calculator_again() -> Tool:
    return Tool("calculator", "Takes a built-in's name.", {"type": "object"}, _shout)
