"""Properties over generated requests: the engine never raises, and its decisions are well-formed."""

from __future__ import annotations

from importlib import resources

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.policy.decision import RESERVED_RULE_IDS, PolicyEffect, PolicyRequest
from processors.policy.engine import PolicyEngine
from processors.policy.policy_file import parse_policy_file
from tests.unit.processors.policy.helpers import with_default

ACME = """
@id("acme-http-docs")
permit (principal, action == Action::"call", resource == Tool::"http_fetch")
when { context.urls.url.host == "docs.python.org" };

@id("acme-limit")
forbid (principal, action, resource == Tool::"read_model")
when { context.arguments has limit && context.arguments.limit > 100 };

@id("acme-approve-everything-for-interns")
@approval
permit (principal in Role::"intern", action == Action::"call", resource);
"""
ENGINE = with_default({"acme": ACME})
KNOWN_TOOLS = ["calculator", "python", "read_file", "write_file", "read_model", "http_fetch"]
ROLES = ["admin", "operator", "viewer", "intern", "guest"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["../x", "/etc/passwd", "https://docs.python.org/", "https://u@h/", "acme", "globex"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(["path", "__extn"]), children, max_size=4)
    ),
    max_leaves=20,
)
argument_names = st.sampled_from(["path", "url", "org_id", "limit", "code"]) | st.text(max_size=10)
ids = st.text(min_size=1, max_size=12)

requests = st.builds(
    PolicyRequest,
    org_id=st.sampled_from(["acme", "globex"]) | ids,
    user_id=ids,
    role=st.none() | st.sampled_from(ROLES) | ids,
    tool=st.sampled_from(KNOWN_TOOLS) | ids,
    arguments=st.dictionaries(argument_names, json_values, max_size=5),
    task_id=st.text(max_size=12),
)


def check_well_formed(policies: PolicyEngine, request: PolicyRequest) -> None:
    decision = policies.decide(request)
    rules = {rule.id: rule for rule in policies.rules_for(request.org_id)}

    assert decision.reason
    assert decision.rule in rules or decision.rule in RESERVED_RULE_IDS
    assert set(decision.matched_rules) <= set(rules)
    if decision.effect == PolicyEffect.ALLOW:
        assert rules[decision.rule].effect == "permit" and not rules[decision.rule].approval
        assert not any(rules[r].approval for r in decision.matched_rules)
    elif decision.effect == PolicyEffect.REQUIRE_APPROVAL:
        assert rules[decision.rule].effect == "permit" and rules[decision.rule].approval
    elif decision.rule in rules:
        assert rules[decision.rule].effect == "forbid"
    # No side effect: the same request, the same decision.
    assert policies.decide(request) == decision


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_every_request_gets_a_well_formed_decision(request: PolicyRequest) -> None:
    check_well_formed(ENGINE, request)


@settings(max_examples=200)
@given(requests, st.text(min_size=1, max_size=12).filter(lambda t: t not in KNOWN_TOOLS))
def test_unknown_tools_are_denied(request: PolicyRequest, tool: str) -> None:
    decision = ENGINE.decide(request.model_copy(update={"tool": tool}))

    # Only the acme interns' catch-all approval rule names no tool; it can never allow outright.
    assert decision.effect != PolicyEffect.ALLOW
    if request.role != "intern" or request.org_id != "acme":
        assert decision.effect == PolicyEffect.DENY


@settings(max_examples=200)
@given(requests)
def test_a_catch_all_forbid_denies_everything_in_its_org_only(request: PolicyRequest) -> None:
    lockdown = with_default({"acme": '@id("lockdown") forbid (principal, action, resource);'})

    decision = lockdown.decide(request)

    if request.org_id == "acme":
        assert decision.effect == PolicyEffect.DENY
    else:
        assert decision == with_default({}).decide(request)


@settings(max_examples=200)
@given(requests)
def test_adding_a_permit_never_turns_a_deny_by_forbid_into_anything_else(request: PolicyRequest) -> None:
    generous = PolicyEngine(
        parse_policy_file(_default_text_plus('@id("all") permit (principal, action, resource);'), "d.cedar")
    )
    before = ENGINE.decide(request.model_copy(update={"org_id": "globex"}))
    after = generous.decide(request.model_copy(update={"org_id": "globex"}))

    if before.effect == PolicyEffect.DENY and before.rule != "default-deny":
        assert (after.effect, after.rule) == (before.effect, before.rule)


def _default_text_plus(extra: str) -> str:
    return resources.files("processors.policy").joinpath("default.cedar").read_text() + extra
