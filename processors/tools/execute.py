"""The runner's one entry point to the tools: arguments in, a recorded :class:`ToolOutcome` out.

:func:`execute` parses and validates the arguments before anything runs, invokes the tool under
the call's wall-clock limit, caps the output, and scans it for prompt injection. Whatever the
model should hear about (bad arguments, an unknown tool, a tool's own failure, a sandbox limit) is
an outcome with ``error_type`` set; a bug in a built-in tool still raises.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pydantic import BaseModel, ConfigDict

from processors.tools.contract import ToolContext, ToolError, ToolOutput, ToolTimeout
from processors.tools.injection import quarantine_notice, scan
from processors.tools.registry import BUILTIN, ToolRegistry, default_registry, parse_arguments
from streams import tracing

log = logging.getLogger(__name__)

TRUNCATION_MARK = "\n[output truncated]"
# Error types of the built-in tools that a later attempt of the same call may not hit.
TRANSIENT_ERROR_TYPES = frozenset(
    {"ToolTimeout", "HttpFetchTimeout", "HttpFetchUnreachable", "ReadModelUnavailable", "ReadModelTimeout"}
)


class ToolOutcome(BaseModel):
    """The recorded result of one tool call."""

    model_config = ConfigDict(frozen=True)

    output: str
    error_type: str | None = None
    error: str | None = None
    latency_ms: float
    truncated: bool = False
    quarantined: bool = False
    findings: list[str] = []

    @property
    def for_model(self) -> str:
        """What the model is shown: a notice when quarantined, else the error and/or the output.

        A pure function of the recorded fields, so a replay shows the model the same text.
        """
        if self.quarantined:
            return quarantine_notice(self.findings)
        text = self.output + (TRUNCATION_MARK if self.truncated else "")
        if self.error_type is None:
            return text
        return f"{self.error_type}: {self.error}" + (f"\n{text}" if self.output else "")


async def execute(
    tool_name: str, arguments_json: str, context: ToolContext, *, registry: ToolRegistry | None = None
) -> ToolOutcome:
    """Run one tool call for ``context``'s task and say how it went."""
    registry = registry or default_registry()
    started = time.perf_counter()
    limit = context.limits.model_output_chars
    try:
        tool = registry.get(tool_name)
        arguments = parse_arguments(arguments_json)
        registry.validate(tool_name, arguments)
        deadline = asyncio.timeout(context.limits.call_seconds)
        try:
            async with deadline:
                with tracing.span(
                    f"tool {tool_name}",
                    attributes={"agentlog.task_id": context.task_id, "agentlog.tool": tool_name},
                ):
                    result: ToolOutput = await tool.invoke(arguments, context)
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise ToolTimeout(
                f"tool {tool_name!r} ran past the {context.limits.call_seconds:g}s call limit"
            ) from exc
    except ToolError as exc:
        return _outcome(
            started, exc.output, limit, truncated=exc.truncated, error_type=type(exc).__name__, error=str(exc)
        )
    except Exception as exc:
        if tool_name in registry and registry.origin(tool_name) != BUILTIN:
            # A plugin's own failure is the plugin's result, not a reason to stop the task.
            log.exception("tool %r (%s) raised", tool_name, registry.origin(tool_name))
            return _outcome(
                started, "", limit, truncated=False, error_type=type(exc).__name__, error=str(exc)
            )
        raise
    return _outcome(started, result.text, limit, truncated=result.truncated)


def _outcome(
    started: float,
    output: str,
    limit: int,
    *,
    truncated: bool,
    error_type: str | None = None,
    error: str | None = None,
) -> ToolOutcome:
    if len(output) > limit:
        output, truncated = output[:limit], True
    findings = scan(output + "\n" + (error or ""))
    return ToolOutcome(
        output=output,
        error_type=error_type,
        error=error,
        latency_ms=(time.perf_counter() - started) * 1000,
        truncated=truncated,
        quarantined=bool(findings),
        findings=findings,
    )
