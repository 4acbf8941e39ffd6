"""Building requests and engines from policy text for the policy engine's tests."""

from __future__ import annotations

from typing import Any

from processors.policy.decision import PolicyRequest
from processors.policy.engine import PolicyEngine
from processors.policy.loader import default_policy
from processors.policy.policy_file import parse_policy_file


def request(
    role: str | None, tool: str, arguments: dict[str, Any] | None = None, org: str = "acme"
) -> PolicyRequest:
    return PolicyRequest(
        org_id=org, user_id="alice", role=role, tool=tool, arguments=arguments or {}, task_id="task-1"
    )


def engine(default: str, **overrides: str) -> PolicyEngine:
    """An engine whose default policy is ``default`` and whose org ``name`` adds ``overrides[name]``."""
    return PolicyEngine(
        parse_policy_file(default, "default.cedar"),
        {org: parse_policy_file(text, f"{org}.cedar") for org, text in overrides.items()},
    )


def with_default(overrides: dict[str, str]) -> PolicyEngine:
    """An engine with the shipped default policy and ``{org: policy text}`` overrides."""
    return PolicyEngine(
        default_policy(), {org: parse_policy_file(text, f"{org}.cedar") for org, text in overrides.items()}
    )
