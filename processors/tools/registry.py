"""The tool registry: built-in tools and plugins by name, and argument validation.

Plugins are Python entry points in the group ``agentlog.tools``: each names a callable taking no
arguments and returning a :class:`~processors.tools.contract.Tool`. They are loaded once, with the
built-ins, by :func:`default_registry`; a plugin that cannot be loaded, returns something else or
reuses a taken name stops the registry from being built (logged and raised), so a worker never
runs with a tool silently missing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from processors.tools import calculator, files, http_fetch, python_sandbox, read_model
from processors.tools.contract import Tool, ToolArgumentsError, UnknownToolError

log = logging.getLogger(__name__)

PLUGIN_GROUP = "agentlog.tools"
BUILTIN = "builtin"


class ToolPluginError(RuntimeError):
    """A tool plugin could not be loaded, or its tool cannot be registered."""


class ToolRegistry:
    """Tools by name, each with the validator of its arguments' schema."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        self._origins: dict[str, str] = {}

    def register(self, tool: Tool, *, origin: str = BUILTIN) -> None:
        """Add ``tool``; raises ValueError for a taken name or an invalid parameters schema."""
        if tool.name in self._tools:
            raise ValueError(
                f"tool name {tool.name!r} from {origin} is already registered by {self._origins[tool.name]}"
            )
        if tool.parameters.get("type") != "object":
            raise ValueError(f"tool {tool.name!r}: parameters must be a JSON schema of type 'object'")
        try:
            Draft202012Validator.check_schema(tool.parameters)
        except SchemaError as exc:
            raise ValueError(
                f"tool {tool.name!r}: parameters are not a valid JSON schema: {exc.message}"
            ) from exc
        self._tools[tool.name] = tool
        self._validators[tool.name] = Draft202012Validator(tool.parameters)
        self._origins[tool.name] = origin

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(f"no tool named {name!r}; registered: {sorted(self._tools)}") from None

    def origin(self, name: str) -> str:
        """``builtin``, or the entry point a plugin tool came from."""
        self.get(name)
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools[name] for name in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def validate(self, name: str, arguments: dict[str, Any]) -> None:
        """Raise :class:`ToolArgumentsError` naming every path and rule ``arguments`` break."""
        validator = self._validators[self.get(name).name]
        errors = sorted(validator.iter_errors(arguments), key=lambda error: list(error.absolute_path))
        if errors:
            problems = "; ".join(
                f"{error.json_path}: {error.message} (rule '{error.validator}')" for error in errors
            )
            raise ToolArgumentsError(f"arguments of tool {name!r} are invalid: {problems}")


BUILTIN_TOOLS: tuple[Tool, ...] = (
    calculator.TOOL,
    python_sandbox.TOOL,
    files.READ_FILE,
    files.WRITE_FILE,
    http_fetch.TOOL,
    read_model.TOOL,
)


def build_registry(plugins: Iterable[EntryPoint] | None = None) -> ToolRegistry:
    """The built-in tools plus the tools of ``plugins`` (default: the installed ``agentlog.tools``)."""
    registry = ToolRegistry()
    for tool in BUILTIN_TOOLS:
        registry.register(tool)
    for entry_point in entry_points(group=PLUGIN_GROUP) if plugins is None else plugins:
        _register_plugin(registry, entry_point)
    return registry


def _register_plugin(registry: ToolRegistry, entry_point: EntryPoint) -> None:
    origin = f"plugin {entry_point.name} = {entry_point.value}"
    try:
        factory = entry_point.load()
        tool = factory()
        if not isinstance(tool, Tool):
            raise TypeError(f"returned {type(tool).__name__}, not a processors.tools.contract.Tool")
        registry.register(tool, origin=origin)
    except Exception as exc:
        log.error("tool %s failed to load: %s: %s", origin, type(exc).__name__, exc)
        raise ToolPluginError(f"tool {origin} failed to load: {type(exc).__name__}: {exc}") from exc
    log.info("tool %r registered from %s", tool.name, origin)


@lru_cache(maxsize=1)
def default_registry() -> ToolRegistry:
    """The process's registry: built-ins and installed plugins, loaded on first use."""
    return build_registry()


def parse_arguments(arguments_json: str) -> dict[str, Any]:
    """The arguments a model sent, as a JSON object (empty text means no arguments)."""
    try:
        arguments = json.loads(arguments_json or "{}")
    except json.JSONDecodeError as exc:
        raise ToolArgumentsError(f"tool arguments are not JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise ToolArgumentsError(f"tool arguments must be a JSON object, got {type(arguments).__name__}")
    return arguments


def get_tool(name: str) -> Tool:
    """A registered tool by name (built-in or plugin)."""
    return default_registry().get(name)


# The tools the current runner offers and can run synchronously. It goes when the runner offers
# the registry's tools and calls processors.tools.execute.
TOOLS: dict[str, Tool] = {calculator.TOOL.name: calculator.TOOL}
