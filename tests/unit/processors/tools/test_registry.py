"""The tool registry: schema validation before a tool runs, and plugins from entry points."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from importlib.metadata import Distribution, DistributionFinder, entry_points
from pathlib import Path
from typing import Any

import pytest

from processors.tools.contract import Tool, ToolArgumentsError, ToolOutput, UnknownToolError
from processors.tools.registry import (
    BUILTIN,
    PLUGIN_GROUP,
    TOOLS,
    ToolPluginError,
    ToolRegistry,
    build_registry,
    get_tool,
    parse_arguments,
)

PLUGIN_MODULE = "tests.unit.processors.tools.sample_plugin"


class _FakeDistribution(Distribution):
    """An installed distribution that exists only in this process, declaring entry points."""

    def __init__(self, name: str, entry_points_txt: str) -> None:
        self._files = {"METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n"}
        self._files["entry_points.txt"] = entry_points_txt

    def read_text(self, filename: str) -> str | None:
        return self._files.get(filename)

    def locate_file(self, path: Any) -> Path:
        return Path(str(path))


class _FakeFinder(DistributionFinder):
    def __init__(self, distribution: _FakeDistribution) -> None:
        self.distribution = distribution

    def find_spec(self, *args: Any, **kwargs: Any) -> None:
        return None

    def find_distributions(self, context: Any = None) -> Iterator[Distribution]:
        name = getattr(context, "name", None)
        if name in (None, self.distribution.metadata["Name"]):
            yield self.distribution


@pytest.fixture
def install_plugins() -> Iterator[Any]:
    """Installs fake distributions whose ``agentlog.tools`` entry points the test names."""
    finders: list[_FakeFinder] = []

    def install(**targets: str) -> None:
        lines = "\n".join(f"{name} = {target}" for name, target in targets.items())
        finder = _FakeFinder(
            _FakeDistribution(f"agentlog-test-plugin-{len(finders)}", f"[{PLUGIN_GROUP}]\n{lines}\n")
        )
        finders.append(finder)
        sys.meta_path.append(finder)

    yield install
    for finder in finders:
        sys.meta_path.remove(finder)


def test_plugin_from_an_installed_entry_point_is_registered(install_plugins: Any) -> None:
    install_plugins(shout=f"{PLUGIN_MODULE}:shout_tool")
    assert [ep.name for ep in entry_points(group=PLUGIN_GROUP)] == ["shout"]
    registry = build_registry()
    assert "shout" in registry
    assert registry.origin("shout") == f"plugin shout = {PLUGIN_MODULE}:shout_tool"
    assert registry.origin("calculator") == BUILTIN
    assert registry.get("shout").openai_spec()["function"]["name"] == "shout"


@pytest.mark.parametrize(
    ("target", "cause"),
    [
        (f"{PLUGIN_MODULE}:not_a_tool", "returned str, not a processors.tools.contract.Tool"),
        (f"{PLUGIN_MODULE}:failing_factory", "RuntimeError: cannot reach the plugin's backend"),
        (f"{PLUGIN_MODULE}:calculator_again", "'calculator' from plugin broken = "),
        ("tests.unit.processors.tools.no_such_module:tool", "ModuleNotFoundError"),
        (f"{PLUGIN_MODULE}:no_such_factory", "AttributeError"),
    ],
)
def test_a_broken_plugin_stops_the_registry_loudly(
    install_plugins: Any, caplog: pytest.LogCaptureFixture, target: str, cause: str
) -> None:
    install_plugins(broken=target)
    with (
        caplog.at_level(logging.ERROR, logger="processors.tools.registry"),
        pytest.raises(ToolPluginError) as raised,
    ):
        build_registry()
    assert f"plugin broken = {target}" in str(raised.value)
    assert cause in str(raised.value)
    assert any(cause in record.getMessage() for record in caplog.records)


def _registry_with(tool: Tool) -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(tool)
    return registry


async def _echo(arguments: dict[str, Any], context: Any) -> ToolOutput:
    return ToolOutput(text=str(arguments))


SCHEMA = {
    "type": "object",
    "properties": {
        "count": {"type": "integer", "minimum": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["count"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "$: 'count' is a required property (rule 'required')"),
        ({"count": "3"}, "$.count: '3' is not of type 'integer' (rule 'type')"),
        ({"count": 0}, "$.count: 0 is less than the minimum of 1 (rule 'minimum')"),
        ({"count": 1, "tags": ["a", 2]}, "$.tags[1]: 2 is not of type 'string' (rule 'type')"),
        (
            {"count": 1, "rm": "-rf"},
            "Additional properties are not allowed ('rm' was unexpected) (rule 'additionalProperties')",
        ),
    ],
)
def test_arguments_breaking_the_schema_name_the_path_and_rule(
    arguments: dict[str, Any], expected: str
) -> None:
    registry = _registry_with(Tool("echo", "Echo.", SCHEMA, _echo))
    with pytest.raises(ToolArgumentsError) as raised:
        registry.validate("echo", arguments)
    assert expected in str(raised.value)
    assert "arguments of tool 'echo' are invalid" in str(raised.value)


def test_every_broken_rule_is_reported_at_once() -> None:
    registry = _registry_with(Tool("echo", "Echo.", SCHEMA, _echo))
    with pytest.raises(ToolArgumentsError) as raised:
        registry.validate("echo", {"count": -1, "extra": True})
    assert "rule 'minimum'" in str(raised.value) and "rule 'additionalProperties'" in str(raised.value)


def test_valid_arguments_pass() -> None:
    _registry_with(Tool("echo", "Echo.", SCHEMA, _echo)).validate("echo", {"count": 2, "tags": ["x"]})


def test_registration_refuses_a_bad_schema_or_a_taken_name() -> None:
    registry = _registry_with(Tool("echo", "Echo.", SCHEMA, _echo))
    with pytest.raises(ValueError, match="already registered by builtin"):
        registry.register(Tool("echo", "Again.", SCHEMA, _echo), origin="plugin x")
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        registry.register(
            Tool("bad", "Bad.", {"type": "object", "properties": {"a": {"type": "nope"}}}, _echo)
        )
    with pytest.raises(ValueError, match="of type 'object'"):
        registry.register(Tool("flat", "Flat.", {"type": "string"}, _echo))


def test_unknown_tool_names_the_registered_ones() -> None:
    with pytest.raises(UnknownToolError, match=r"no tool named 'rm'; registered: \['echo'\]"):
        _registry_with(Tool("echo", "Echo.", SCHEMA, _echo)).get("rm")


def test_builtins_are_registered_with_valid_schemas() -> None:
    registry = build_registry(plugins=[])
    assert registry.names() == ["calculator", "http_fetch", "python", "read_file", "read_model", "write_file"]
    assert [tool.name for tool in registry if tool.pure] == ["calculator"]
    assert {tool.name for tool in registry if tool.sensitive} == {"http_fetch", "python", "write_file"}


def test_names_the_current_runner_uses_still_work() -> None:
    assert list(TOOLS) == ["calculator"]
    assert TOOLS["calculator"].pure
    assert get_tool("calculator").run(parse_arguments('{"expression": "6 * 7"}')) == "42"
    assert get_tool("calculator").openai_spec()["function"]["parameters"]["required"] == ["expression"]
    with pytest.raises(TypeError, match="no synchronous run"):
        get_tool("python").run({"code": "print(1)"})


@pytest.mark.parametrize(("text", "message"), [("{", "not JSON"), ("[1]", "must be a JSON object, got list")])
def test_parse_arguments_refuses_non_objects(text: str, message: str) -> None:
    with pytest.raises(ToolArgumentsError, match=message):
        parse_arguments(text)
    assert parse_arguments("") == {}
