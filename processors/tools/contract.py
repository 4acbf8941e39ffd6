"""What a tool is, what it is given, and what it gives back: the types the runner and tools share.

A :class:`Tool` is a name, a description, a JSON schema for its arguments and an async ``invoke``.
It is given the parsed, already validated arguments and a :class:`ToolContext` (whose task it runs
for, where that task's workspace is, which limits apply). It returns a :class:`ToolOutput`, or
raises a :class:`ToolError` the model is meant to see; :func:`processors.tools.execute.execute`
turns either into a recorded :class:`ToolOutcome`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ToolError(Exception):
    """A failure the model should see as the tool's result (not a bug in agentlog).

    ``error_type`` recorded for the call is the class name, so each distinct failure is its own
    subclass. ``output`` carries whatever the tool produced before failing (a sandboxed program's
    stdout before it hit a limit, say), which is recorded and shown alongside the error.
    """

    def __init__(self, message: str, *, output: str = "", truncated: bool = False) -> None:
        super().__init__(message)
        self.output = output
        self.truncated = truncated


class UnknownToolError(ToolError, LookupError):
    """The model asked for a tool that is not registered."""


class ToolArgumentsError(ToolError, ValueError):
    """The tool arguments are not JSON, not an object, or break the tool's JSON schema."""


class ToolTimeout(ToolError):
    """The tool did not finish within the call's wall-clock limit."""


class SandboxLimits(BaseModel):
    """Limits of one sandboxed Python run (the ``python`` tool)."""

    model_config = ConfigDict(frozen=True)

    cpu_seconds: int = Field(default=10, ge=1, description="CPU time of the program (RLIMIT_CPU).")
    wall_seconds: float = Field(default=30.0, gt=0, description="Wall-clock time before it is killed.")
    memory_bytes: int = Field(default=512 * 2**20, ge=64 * 2**20, description="Address space per process.")
    file_size_bytes: int = Field(default=16 * 2**20, ge=0, description="Largest file it may write.")
    processes: int = Field(default=32, ge=1, description="Processes its uid may have (RLIMIT_NPROC).")
    open_files: int = Field(default=256, ge=16, description="Open file descriptors per process.")
    output_bytes: int = Field(default=64 * 2**10, ge=1, description="stdout and stderr kept, each.")
    code_chars: int = Field(default=100_000, ge=1, description="Longest program accepted.")


class FileLimits(BaseModel):
    """Limits of the workspace file tools."""

    model_config = ConfigDict(frozen=True)

    read_bytes: int = Field(default=2**20, ge=1, description="Most bytes returned by one read.")
    write_bytes: int = Field(default=2**20, ge=0, description="Largest content one write may store.")
    workspace_bytes: int = Field(
        default=64 * 2**20, ge=0, description="Total size the workspace may reach through a write."
    )


class HttpLimits(BaseModel):
    """Limits of the HTTP fetch tool."""

    model_config = ConfigDict(frozen=True)

    timeout_seconds: float = Field(default=10.0, gt=0, description="Whole fetch, redirects included.")
    response_bytes: int = Field(default=2**20, ge=1, description="Body bytes kept; the rest is dropped.")
    max_redirects: int = Field(default=5, ge=0)


class QueryLimits(BaseModel):
    """Limits of the read-model query tool."""

    model_config = ConfigDict(frozen=True)

    statement_timeout_ms: int = Field(default=2000, ge=1)
    max_rows: int = Field(default=100, ge=1)


class ToolLimits(BaseModel):
    """Every limit a tool call runs under."""

    model_config = ConfigDict(frozen=True)

    call_seconds: float = Field(default=60.0, gt=0, description="Wall-clock limit of any one tool call.")
    model_output_chars: int = Field(
        default=16_000, ge=1, description="Longest output recorded and shown to the model."
    )
    sandbox: SandboxLimits = SandboxLimits()
    files: FileLimits = FileLimits()
    http: HttpLimits = HttpLimits()
    query: QueryLimits = QueryLimits()


class ToolSettings(BaseModel):
    """Deployment configuration the tools need (the platform fills it from its settings)."""

    model_config = ConfigDict(frozen=True)

    http_allow_hosts: tuple[str, ...] = Field(
        default=(),
        description="Hosts the fetch tool may reach: 'name' (any port) or 'name:port'. Empty: none.",
    )
    postgres_dsn: str | None = Field(default=None, description="The read model the query tool reads.")
    sandbox_uid_base: int = Field(
        default=1_000_000_000,
        ge=1000,
        le=2**31 - 2**30,
        description="First of the 2**30 unprivileged uids sandboxed programs run as (one per task).",
    )


class ToolContext(BaseModel):
    """Whose call this is and what it may touch; given to every tool invocation."""

    model_config = ConfigDict(frozen=True)

    task_id: str = Field(min_length=1)
    org_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    role: str | None = None
    workspace: Path = Field(description="The task's own directory; file tools and the sandbox stay in it.")
    limits: ToolLimits = ToolLimits()
    settings: ToolSettings = ToolSettings()
    idempotency_key: str | None = Field(
        default=None,
        description="The call's key (the same on every attempt): tools that reach a service pass it on.",
    )


class ToolOutput(BaseModel):
    """What a tool produced."""

    model_config = ConfigDict(frozen=True)

    text: str
    truncated: bool = False


Invoke = Callable[[dict[str, Any], ToolContext], Awaitable[ToolOutput]]


@dataclass(frozen=True)
class Tool:
    """A tool the model may call."""

    name: str
    description: str
    parameters: dict[str, Any]
    invoke: Invoke
    # Pure and local (no side effect outside this process, same output for the same arguments):
    # the processor may run it before its request is durable and record both in one write, since
    # running it again after a crash changes nothing.
    pure: bool = False
    # Touches something outside the task (the network, code execution, stored files): a hint for
    # approval policies; it changes nothing here.
    sensitive: bool = False
    # The synchronous implementation of a pure tool, kept for callers of the older ``run`` until
    # the runner calls ``execute``.
    sync_run: Callable[[dict[str, Any]], str] | None = field(default=None, repr=False, compare=False)

    def openai_spec(self) -> dict[str, Any]:
        """The tool as offered to an OpenAI-compatible chat completion."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def run(self, arguments: dict[str, Any]) -> str:
        """Older synchronous entry point; only pure tools built with :func:`pure_tool` have one."""
        if self.sync_run is None:
            raise TypeError(f"tool {self.name!r} has no synchronous run; call processors.tools.execute")
        return self.sync_run(arguments)


def pure_tool(
    name: str, description: str, parameters: dict[str, Any], function: Callable[[dict[str, Any]], str]
) -> Tool:
    """A pure, local tool from a plain function of its arguments (the calculator, say)."""

    async def invoke(arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
        return ToolOutput(text=function(arguments))

    return Tool(name, description, parameters, invoke, pure=True, sync_run=function)
