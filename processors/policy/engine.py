"""The policy engine: Cedar policy sets per org, built once, then one pure evaluation per tool call.

Cedar itself gives default deny and "a forbid beats any permit"; the engine adds the third effect
(a permit marked ``@approval`` beats plain permits and asks a human) and fails closed where Cedar
would fail open: a forbid rule that cannot be evaluated for a request (say it reads an argument
of the wrong type) denies the call instead of being skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import cedarpy

from processors.policy.cedar_request import UnrepresentableArgumentError, cedar_call
from processors.policy.decision import (
    DEFAULT_DENY,
    INVALID_REQUEST,
    UNREPRESENTABLE_ARGUMENTS,
    PolicyDecision,
    PolicyEffect,
    PolicyRequest,
)
from processors.policy.policy_file import PolicyFile, PolicyFileError, Rule

# cedarpy reports a policy that failed to evaluate as "error while evaluating policy `<id>`: ...".
# An error in any other shape (say a future wording) is treated as a request error: still a denial.
_POLICY_ERROR = re.compile(r"^error while evaluating policy `(?P<id>[^`]+)`: (?P<message>.*)$", re.DOTALL)


@dataclass(frozen=True)
class _CompiledPolicies:
    """One org's policy set (the default's rules, then its own) and its rules by id, in order."""

    policy_set: cedarpy.PolicySet
    rules: dict[str, Rule]


class PolicyEngine:
    """Decides tool calls. Built once from parsed policy files; :meth:`decide` has no side effect."""

    def __init__(self, default: PolicyFile, overrides: Mapping[str, PolicyFile] | None = None) -> None:
        self._default = _compile([default])
        self._orgs = {org: _compile([default, own]) for org, own in (overrides or {}).items()}

    @property
    def orgs_with_overrides(self) -> frozenset[str]:
        return frozenset(self._orgs)

    def rules_for(self, org_id: str) -> tuple[Rule, ...]:
        """The rules that apply to ``org_id``'s calls, in evaluation order."""
        return tuple(self._orgs.get(org_id, self._default).rules.values())

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        """Allow, deny or require approval for ``request``; never raises for a valid request."""
        try:
            call = cedar_call(request)
        except UnrepresentableArgumentError as exc:
            return PolicyDecision(
                effect=PolicyEffect.DENY, rule=UNREPRESENTABLE_ARGUMENTS, reason=f"argument {exc}"
            )
        compiled = self._orgs.get(request.org_id, self._default)
        try:
            result = cedarpy.is_authorized(call.request, compiled.policy_set, call.entities)
        except ValueError as exc:
            return PolicyDecision(effect=PolicyEffect.DENY, rule=INVALID_REQUEST, reason=str(exc))
        return verdict(request, compiled.rules, result.diagnostics.reasons, result.diagnostics.errors)


def verdict(
    request: PolicyRequest, rules: Mapping[str, Rule], matched: list[str], errors: list[str]
) -> PolicyDecision:
    """The decision from Cedar's determining rules (``matched``) and evaluation ``errors``.

    Precedence: a forbid that held; a forbid that failed to evaluate; a request Cedar could not
    build; a permit marked @approval; a plain permit; default deny. Among rules of one kind the
    first in file order (default policy before the org's) is the one recorded.
    """
    order = {rule_id: position for position, rule_id in enumerate(rules)}
    held = tuple(sorted(matched, key=order.__getitem__))
    failed: dict[str, str] = {}
    request_errors: list[str] = []
    for error in errors:
        found = _POLICY_ERROR.match(error)
        if found:
            failed.setdefault(found["id"], found["message"])
        else:
            request_errors.append(error)

    def decision(effect: PolicyEffect, rule: Rule, default_reason: str) -> PolicyDecision:
        return PolicyDecision(
            effect=effect, rule=rule.id, reason=rule.reason or default_reason, matched_rules=held
        )

    for rule_id in held:
        if rules[rule_id].effect == "forbid":
            return decision(PolicyEffect.DENY, rules[rule_id], f"forbidden by rule {rule_id!r}")
    for rule_id in sorted(failed, key=order.__getitem__):
        if rules[rule_id].effect == "forbid":
            return PolicyDecision(
                effect=PolicyEffect.DENY,
                rule=rule_id,
                reason=f"forbid rule {rule_id!r} could not be evaluated, so it denies: {failed[rule_id]}",
                matched_rules=held,
            )
    if request_errors:
        return PolicyDecision(
            effect=PolicyEffect.DENY,
            rule=INVALID_REQUEST,
            reason="; ".join(request_errors),
            matched_rules=held,
        )
    for rule_id in held:
        if rules[rule_id].approval:
            return decision(
                PolicyEffect.REQUIRE_APPROVAL, rules[rule_id], f"rule {rule_id!r} requires a human's approval"
            )
    if held:
        return decision(PolicyEffect.ALLOW, rules[held[0]], f"permitted by rule {held[0]!r}")
    role = f"role {request.role!r}" if request.role is not None else "a caller without a role"
    reason = f"no rule permits tool {request.tool!r} for {role} in org {request.org_id!r}"
    if failed:
        reason += "; rules that could not be evaluated: " + ", ".join(
            f"{rule_id!r} ({message})" for rule_id, message in failed.items()
        )
    return PolicyDecision(effect=PolicyEffect.DENY, rule=DEFAULT_DENY, reason=reason)


def _compile(files: list[PolicyFile]) -> _CompiledPolicies:
    rules: dict[str, Rule] = {}
    policies = {}
    for policy_file in files:
        for rule in policy_file.rules:
            if rule.id in rules:
                raise PolicyFileError(
                    policy_file.source, f"rule id {rule.id!r} is already defined in {rules[rule.id].source}"
                )
            rules[rule.id] = rule
        policies.update(policy_file.policies)
    document = {"staticPolicies": policies, "templates": {}, "templateLinks": []}
    try:
        policy_set = cedarpy.PolicySet.from_json_str(json.dumps(document))
    except ValueError as exc:
        sources = ", ".join(policy_file.source for policy_file in files)
        raise PolicyFileError(sources, f"Cedar refused the combined policy set: {exc}") from None
    return _CompiledPolicies(policy_set=policy_set, rules=rules)
