"""How the engine combines rules: precedence, the deciding rule, failures, and tenant isolation."""

from __future__ import annotations

import pytest

from processors.policy.decision import PolicyEffect
from processors.policy.engine import verdict
from processors.policy.loader import default_policy
from processors.policy.policy_file import PolicyFileError
from tests.unit.processors.policy.helpers import engine, request, with_default

BASE = """
@id("search-everyone")
permit (principal, action == Action::"call", resource == Tool::"search");

@id("search-everyone-again")
permit (principal, action == Action::"call", resource == Tool::"search");

@id("deploy-operators")
@reason("operators deploy")
permit (principal in Role::"operator", action == Action::"call", resource == Tool::"deploy");

@id("deploy-prod-approval")
@approval
permit (principal, action == Action::"call", resource == Tool::"deploy")
when { context.arguments has env && context.arguments.env == "prod" };

@id("deploy-friday-freeze")
@reason("no deploys on a freeze day")
forbid (principal, action, resource == Tool::"deploy")
when { context.arguments has freeze && context.arguments.freeze };

@id("search-no-secrets")
forbid (principal, action, resource == Tool::"search")
when { context.arguments has q && context.arguments.q like "*secret*" };

@id("search-no-secrets-either")
forbid (principal, action, resource == Tool::"search")
when { context.arguments has q && context.arguments.q like "*secret*" };
"""


def test_default_deny_when_no_rule_matches() -> None:
    decision = engine(BASE).decide(request("viewer", "deploy"))

    assert decision.effect == PolicyEffect.DENY
    assert decision.rule == "default-deny"
    assert decision.matched_rules == ()


def test_an_empty_policy_denies_everything() -> None:
    decision = engine("").decide(request("admin", "search"))

    assert (decision.effect, decision.rule) == (PolicyEffect.DENY, "default-deny")


def test_allow_names_the_first_permit_in_file_order() -> None:
    decision = engine(BASE).decide(request("viewer", "search", {"q": "cats"}))

    assert (decision.effect, decision.rule) == (PolicyEffect.ALLOW, "search-everyone")
    assert decision.matched_rules == ("search-everyone", "search-everyone-again")
    assert decision.reason == "permitted by rule 'search-everyone'"


def test_deny_overrides_allow_and_names_the_first_forbid() -> None:
    decision = engine(BASE).decide(request("viewer", "search", {"q": "top secret plans"}))

    assert (decision.effect, decision.rule) == (PolicyEffect.DENY, "search-no-secrets")
    assert decision.matched_rules == ("search-no-secrets", "search-no-secrets-either")


def test_approval_overrides_allow() -> None:
    decision = engine(BASE).decide(request("operator", "deploy", {"env": "prod"}))

    assert (decision.effect, decision.rule) == (PolicyEffect.REQUIRE_APPROVAL, "deploy-prod-approval")
    assert decision.reason == "rule 'deploy-prod-approval' requires a human's approval"


def test_approval_alone_is_enough_to_ask() -> None:
    decision = engine(BASE).decide(request("viewer", "deploy", {"env": "prod"}))

    assert (decision.effect, decision.rule) == (PolicyEffect.REQUIRE_APPROVAL, "deploy-prod-approval")


def test_deny_overrides_approval() -> None:
    decision = engine(BASE).decide(request("operator", "deploy", {"env": "prod", "freeze": True}))

    assert (decision.effect, decision.rule) == (PolicyEffect.DENY, "deploy-friday-freeze")
    assert decision.reason == "no deploys on a freeze day"


def test_arguments_decide() -> None:
    decision = engine(BASE).decide(request("operator", "deploy", {"env": "staging", "freeze": False}))

    assert (decision.effect, decision.rule) == (PolicyEffect.ALLOW, "deploy-operators")


def test_a_forbid_that_errors_denies_instead_of_being_skipped() -> None:
    # Cedar skips a policy whose evaluation errors; for a forbid that would let the call through.
    decision = engine(BASE).decide(request("operator", "deploy", {"freeze": "yes"}))

    assert (decision.effect, decision.rule) == (PolicyEffect.DENY, "deploy-friday-freeze")
    assert "could not be evaluated" in decision.reason


def test_a_permit_that_errors_grants_nothing_and_default_deny_says_which() -> None:
    policy = """
    @id("search-if-fast")
    permit (principal, action == Action::"call", resource == Tool::"search")
    when { context.arguments.fast };
    """
    decision = engine(policy).decide(request("viewer", "search", {"q": "x"}))

    assert (decision.effect, decision.rule) == (PolicyEffect.DENY, "default-deny")
    assert "'search-if-fast'" in decision.reason
    assert "fast" in decision.reason


def test_role_membership_comes_from_the_request() -> None:
    assert engine(BASE).decide(request("operator", "deploy")).rule == "deploy-operators"
    assert engine(BASE).decide(request("operators", "deploy")).rule == "default-deny"


def test_principal_org_and_task_are_visible_to_policies() -> None:
    policy = """
    @id("acme-task-7")
    permit (principal, action == Action::"call", resource == Tool::"search")
    when { principal.org == "acme" && context.task == "task-7" };
    """
    acme = request("viewer", "search").model_copy(update={"task_id": "task-7"})
    globex = acme.model_copy(update={"org_id": "globex"})

    assert engine(policy).decide(acme).effect == PolicyEffect.ALLOW
    assert engine(policy).decide(globex).effect == PolicyEffect.DENY


ACME = """
@id("acme-http-hosts")
@reason("acme fetches only from the Python docs and its own hosts")
forbid (principal, action, resource == Tool::"http_fetch")
unless { context.urls.url.host == "docs.python.org" || context.urls.url.host like "*.acme.example" };

@id("acme-no-python-for-viewers")
forbid (principal in Role::"viewer", action, resource == Tool::"python");

@id("acme-shell-admins")
permit (principal in Role::"admin", action == Action::"call", resource == Tool::"shell");
"""
ALLOW, DENY, APPROVAL = PolicyEffect.ALLOW, PolicyEffect.DENY, PolicyEffect.REQUIRE_APPROVAL


@pytest.mark.parametrize(
    ("org", "url", "effect", "rule"),
    [
        ("acme", "https://docs.python.org/3/", ALLOW, "http-fetch-operators"),
        ("acme", "https://DOCS.python.org./x", ALLOW, "http-fetch-operators"),
        ("acme", "http://api.acme.example:8080/v1", ALLOW, "http-fetch-operators"),
        ("acme", "https://evil.example/?docs.python.org", DENY, "acme-http-hosts"),
        ("acme", "https://docs.python.org.evil.example/", DENY, "acme-http-hosts"),
        # the override adds to the default: the default's guardrails still hold
        ("acme", "ftp://docs.python.org/", DENY, "http-fetch-plain-url"),
        ("acme", "https://x@docs.python.org/", DENY, "http-fetch-plain-url"),
        # tenant isolation: acme's host list does not reach globex
        ("globex", "https://evil.example/", ALLOW, "http-fetch-operators"),
    ],
)
def test_an_org_narrows_hosts_for_itself(org: str, url: str, effect: PolicyEffect, rule: str) -> None:
    policies = with_default({"acme": ACME})

    decision = policies.decide(request("operator", "http_fetch", {"url": url}, org=org))

    assert (decision.effect, decision.rule) == (effect, rule), decision.reason


@pytest.mark.parametrize(
    ("org", "role", "tool", "effect", "rule"),
    [
        ("acme", "viewer", "python", DENY, "acme-no-python-for-viewers"),
        ("acme", "operator", "python", ALLOW, "python-operators"),
        ("acme", "admin", "shell", ALLOW, "acme-shell-admins"),
        ("acme", "operator", "shell", DENY, "default-deny"),
        ("globex", "viewer", "python", APPROVAL, "python-viewers-approval"),
        ("globex", "admin", "shell", DENY, "default-deny"),
    ],
)
def test_an_org_tightens_and_extends_the_default_for_itself(
    org: str, role: str, tool: str, effect: PolicyEffect, rule: str
) -> None:
    policies = with_default({"acme": ACME})

    decision = policies.decide(request(role, tool, {"code": "1"}, org=org))

    assert (decision.effect, decision.rule) == (effect, rule), decision.reason


def test_an_org_cannot_lift_a_default_guardrail() -> None:
    lift = '@id("acme-anything") permit (principal, action, resource);'
    policies = with_default({"acme": lift})

    decision = policies.decide(request("admin", "read_file", {"path": "../../etc/passwd"}))

    assert (decision.effect, decision.rule) == (DENY, "workspace-relative-paths")


def test_an_org_cannot_lift_a_default_approval_with_a_plain_permit() -> None:
    lift = '@id("acme-viewers-python") permit (principal, action, resource == Tool::"python");'
    policies = with_default({"acme": lift})

    decision = policies.decide(request("viewer", "python", {"code": "1"}))

    assert (decision.effect, decision.rule) == (APPROVAL, "python-viewers-approval")
    assert decision.matched_rules == ("python-viewers-approval", "acme-viewers-python")


def test_each_org_sees_the_default_rules_then_only_its_own() -> None:
    lockdown = '@id("g") forbid (principal, action, resource);'
    policies = with_default({"acme": ACME, "globex": lockdown})
    default_ids = [rule.id for rule in default_policy().rules]

    assert [rule.id for rule in policies.rules_for("acme")] == [
        *default_ids,
        "acme-http-hosts",
        "acme-no-python-for-viewers",
        "acme-shell-admins",
    ]
    assert [rule.id for rule in policies.rules_for("globex")] == [*default_ids, "g"]
    assert [rule.id for rule in policies.rules_for("initech")] == default_ids
    assert policies.orgs_with_overrides == {"acme", "globex"}


def test_an_org_rule_id_may_not_shadow_a_default_one() -> None:
    clash = '@id("calculator-everyone") forbid (principal, action, resource);'

    with pytest.raises(
        PolicyFileError, match=r"acme\.cedar: rule id 'calculator-everyone' is already defined"
    ):
        with_default({"acme": clash})


def test_two_orgs_may_use_the_same_rule_id() -> None:
    rule = '@id("local") permit (principal, action == Action::"call", resource == Tool::"search");'
    policies = engine("", acme=rule, globex=rule)

    assert policies.decide(request("viewer", "search", org="acme")).rule == "local"
    assert policies.decide(request("viewer", "search", org="globex")).rule == "local"
    assert policies.decide(request("viewer", "search", org="initech")).rule == "default-deny"


def test_an_error_cedar_reports_in_an_unknown_shape_denies() -> None:
    rules = {rule.id: rule for rule in default_policy().rules}

    decision = verdict(
        request("admin", "calculator"), rules, ["calculator-everyone"], ["failed to build request"]
    )

    assert (decision.effect, decision.rule) == (DENY, "invalid-request")
    assert decision.reason == "failed to build request"
