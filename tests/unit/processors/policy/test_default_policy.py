"""The shipped default policy, given a role, when a tool is called with arguments, then the decision."""

from __future__ import annotations

from typing import Any

import pytest

from processors.policy.decision import PolicyEffect
from processors.policy.engine import PolicyEngine
from processors.policy.loader import load_engine
from tests.unit.processors.policy.helpers import request

ALLOW, DENY, APPROVAL = PolicyEffect.ALLOW, PolicyEffect.DENY, PolicyEffect.REQUIRE_APPROVAL

# given role, when tool(arguments), then effect by rule
CASES: list[tuple[str | None, str, dict[str, Any], PolicyEffect, str]] = [
    # calculator: every role, even one the platform does not know
    ("viewer", "calculator", {"expression": "1 + 1"}, ALLOW, "calculator-everyone"),
    ("operator", "calculator", {"expression": "1 + 1"}, ALLOW, "calculator-everyone"),
    ("admin", "calculator", {"expression": "1 + 1"}, ALLOW, "calculator-everyone"),
    ("guest", "calculator", {"expression": "1 + 1"}, ALLOW, "calculator-everyone"),
    (None, "calculator", {"expression": "1 + 1"}, ALLOW, "calculator-everyone"),
    # python: operators and admins; a viewer needs approval; anyone else is denied
    ("operator", "python", {"code": "print(1)"}, ALLOW, "python-operators"),
    ("admin", "python", {"code": "print(1)"}, ALLOW, "python-operators"),
    ("viewer", "python", {"code": "print(1)"}, APPROVAL, "python-viewers-approval"),
    ("guest", "python", {"code": "print(1)"}, DENY, "default-deny"),
    (None, "python", {"code": "print(1)"}, DENY, "default-deny"),
    # read_file: the three roles, inside the workspace only
    ("viewer", "read_file", {"path": "notes/a.txt"}, ALLOW, "read-file-members"),
    ("admin", "read_file", {"path": "a..b.txt"}, ALLOW, "read-file-members"),
    ("guest", "read_file", {"path": "notes/a.txt"}, DENY, "default-deny"),
    ("admin", "read_file", {"path": "/etc/passwd"}, DENY, "workspace-relative-paths"),
    ("admin", "read_file", {"path": ".."}, DENY, "workspace-relative-paths"),
    ("admin", "read_file", {"path": "../secrets"}, DENY, "workspace-relative-paths"),
    ("admin", "read_file", {"path": "a/../../b"}, DENY, "workspace-relative-paths"),
    ("admin", "read_file", {"path": "a/.."}, DENY, "workspace-relative-paths"),
    # a path that is not a string cannot be checked: the forbid fails closed
    ("admin", "read_file", {"path": 7}, DENY, "workspace-relative-paths"),
    # write_file: operators and admins; a viewer needs approval; the path guardrail beats approval
    ("operator", "write_file", {"path": "out.txt", "content": "x"}, ALLOW, "write-file-operators"),
    ("admin", "write_file", {"path": "out.txt", "content": "x"}, ALLOW, "write-file-operators"),
    ("viewer", "write_file", {"path": "out.txt", "content": "x"}, APPROVAL, "write-file-viewers-approval"),
    ("viewer", "write_file", {"path": "../out.txt", "content": "x"}, DENY, "workspace-relative-paths"),
    ("guest", "write_file", {"path": "out.txt", "content": "x"}, DENY, "default-deny"),
    # read_model: the three roles, own org only
    ("viewer", "read_model", {"view": "task"}, ALLOW, "read-model-members"),
    ("viewer", "read_model", {"view": "task", "org_id": "acme"}, ALLOW, "read-model-members"),
    ("admin", "read_model", {"view": "task", "org_id": "globex"}, DENY, "own-org-only"),
    ("admin", "read_model", {"view": "task", "org_id": 1}, DENY, "own-org-only"),
    ("guest", "read_model", {"view": "task"}, DENY, "default-deny"),
    # http_fetch: operators and admins (the deployment's allow-list bounds the hosts); a viewer
    # needs approval; anything but a plain http(s) URL is refused outright
    ("operator", "http_fetch", {"url": "https://docs.python.org/3/"}, ALLOW, "http-fetch-operators"),
    ("admin", "http_fetch", {"url": "http://docs.python.org/3/"}, ALLOW, "http-fetch-operators"),
    ("viewer", "http_fetch", {"url": "https://docs.python.org/3/"}, APPROVAL, "http-fetch-viewers-approval"),
    ("guest", "http_fetch", {"url": "https://docs.python.org/3/"}, DENY, "default-deny"),
    ("admin", "http_fetch", {"url": "file:///etc/passwd"}, DENY, "http-fetch-plain-url"),
    ("admin", "http_fetch", {"url": "https://user:pw@docs.python.org/"}, DENY, "http-fetch-plain-url"),
    (
        "viewer",
        "http_fetch",
        {"url": "https://docs.python.org\\@evil.example/"},
        DENY,
        "http-fetch-plain-url",
    ),
    ("admin", "http_fetch", {"url": 7}, DENY, "http-fetch-plain-url"),
    ("admin", "http_fetch", {}, DENY, "http-fetch-plain-url"),
    # unknown tools are denied for every role
    ("admin", "shell", {"command": "ls"}, DENY, "default-deny"),
    ("viewer", "Calculator", {"expression": "1"}, DENY, "default-deny"),
    # arguments with no faithful Cedar value
    ("admin", "calculator", {"expression": "1", "n": 2**64}, DENY, "unrepresentable-arguments"),
    (
        "admin",
        "calculator",
        {"expression": {"__entity": {"type": "Role", "id": "admin"}}},
        DENY,
        "unrepresentable-arguments",
    ),
]


@pytest.fixture(scope="module")
def default_engine() -> PolicyEngine:
    return load_engine()


@pytest.mark.parametrize(
    ("role", "tool", "arguments", "effect", "rule"),
    CASES,
    ids=[f"{role}-{tool}-{rule}-{i}" for i, (role, tool, _, _, rule) in enumerate(CASES)],
)
def test_default_policy(
    default_engine: PolicyEngine,
    role: str | None,
    tool: str,
    arguments: dict[str, Any],
    effect: PolicyEffect,
    rule: str,
) -> None:
    decision = default_engine.decide(request(role, tool, arguments))

    assert (decision.effect, decision.rule) == (effect, rule), decision.reason
    assert decision.reason


def test_a_rule_with_a_reason_annotation_gives_it() -> None:
    decision = load_engine().decide(request("guest", "python"))
    assert decision.reason == "no rule permits tool 'python' for role 'guest' in org 'acme'"

    decision = load_engine().decide(request("viewer", "python", {"code": "1"}))
    assert decision.reason == "a viewer's code execution runs only after a reviewer approves it"


def test_a_forbid_that_fails_to_evaluate_says_so() -> None:
    decision = load_engine().decide(request("admin", "read_file", {"path": 7}))

    assert decision.reason.startswith("forbid rule 'workspace-relative-paths' could not be evaluated")
    assert "expected string" in decision.reason
    # The permit still held; it is the forbid's failure that denied.
    assert decision.matched_rules == ("read-file-members",)


def test_a_caller_without_a_role_is_told_so() -> None:
    decision = load_engine().decide(request(None, "read_file", {"path": "a"}))

    assert decision.reason == "no rule permits tool 'read_file' for a caller without a role in org 'acme'"
