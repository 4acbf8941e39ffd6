"""Tools the agent may call: a registry of JSON-schema-described tools, their sandboxes, and one entry point.

The runner calls :func:`processors.tools.execute.execute` with a
:class:`processors.tools.contract.ToolContext` and records the
:class:`processors.tools.execute.ToolOutcome`; docs/tools.md describes each tool and its limits.
"""
