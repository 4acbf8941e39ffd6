"""Policy files fail loudly at load: the file, where, and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.policy.check import PolicyRequestError, check_request, parse_request
from processors.policy.decision import PolicyEffect
from processors.policy.loader import PolicyDirectoryError, default_policy, load_engine
from processors.policy.policy_file import PolicyFileError, parse_policy_file

GOOD = '@id("search") permit (principal, action == Action::"call", resource == Tool::"search");\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD + '\n// a comment; with a semicolon\n@id("bad")\npermit (principal, action, resource)\n'
            "when { context.x == };\n",
            r"^acme\.cedar: lines 4-6: unexpected token `}`$",
        ),
        (
            '@id("a")\npermit (principal, action, resource) when { nope(1) };',
            r"^acme\.cedar: lines 1-2: `nope` is not a valid function$",
        ),
        ('@id("a") permit (principal, action, resource)', r"^acme\.cedar: line 1: unexpected end of input$"),
        (
            '@id("s;") permit (principal, action, resource) when { context.x like 3 };',
            r"line 1: .*pattern literal",
        ),
        ("permit (principal, action, resource);", r'policy #1 \(permit\) has no @id\("..."\) annotation'),
        ('@id("") permit (principal, action, resource);', r"has no @id"),
        ('@id("has space") permit (principal, action, resource);', r"rule id 'has space' does not match"),
        (GOOD + GOOD, r"rule id 'search' is used twice"),
        (
            '@id("default-deny") permit (principal, action, resource);',
            r"'default-deny' is reserved for the engine",
        ),
        ('@id("a") @aproval permit (principal, action, resource);', r"unknown annotation\(s\) \['aproval'\]"),
        ('@id("a") @approval("yes") permit (principal, action, resource);', r"@approval takes no value"),
        (
            '@id("a") @approval forbid (principal, action, resource);',
            r"@approval only makes sense on a permit",
        ),
        ('@id("a") @id("b") permit (principal, action, resource);', r"duplicate annotation"),
        ('@id("t") permit (principal == ?principal, action, resource);', r"templates .* are not supported"),
    ],
)
def test_a_broken_policy_file_names_itself_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(PolicyFileError, match=message) as raised:
        parse_policy_file(text, "acme.cedar")

    assert raised.value.source == "acme.cedar"


def test_rules_keep_file_order_and_annotations() -> None:
    text = GOOD + '@id("b") @approval @reason("why") permit (principal, action, resource);\n'

    rules = parse_policy_file(text, "x.cedar").rules

    assert [(r.id, r.effect, r.approval, r.reason, r.source) for r in rules] == [
        ("search", "permit", False, None, "x.cedar"),
        ("b", "permit", True, "why", "x.cedar"),
    ]


def test_the_default_policy_parses_and_every_rule_explains_itself() -> None:
    rules = default_policy().rules

    assert len(rules) >= 10
    assert all(rule.reason for rule in rules), [rule.id for rule in rules if not rule.reason]


def test_load_reads_one_file_per_org_and_ignores_other_files(tmp_path: Path) -> None:
    (tmp_path / "acme.cedar").write_text(GOOD)
    (tmp_path / "README.md").write_text("not a policy")
    (tmp_path / "globex.cedar.bak").write_text("garbage")

    policies = load_engine(tmp_path)

    assert policies.orgs_with_overrides == {"acme"}
    assert policies.rules_for("acme")[-1].id == "search"


def test_load_fails_on_a_broken_override_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "acme.cedar").write_text(GOOD)
    (tmp_path / "globex.cedar").write_text('@id("x")\npermit (principal, action, resource) when { ;\n')

    with pytest.raises(PolicyFileError, match=rf"^{tmp_path}/globex\.cedar: lines 1-2: "):
        load_engine(tmp_path)


def test_load_fails_on_an_override_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "acme.cedar").write_bytes(b"\xff\xfe@id")

    with pytest.raises(PolicyFileError, match=r"acme\.cedar: cannot be read: .*utf-8"):
        load_engine(tmp_path)


def test_load_fails_on_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyDirectoryError, match=r"'.*/nowhere' does not exist"):
        load_engine(tmp_path / "nowhere")


def test_check_evaluates_a_json_request_against_the_files(tmp_path: Path) -> None:
    (tmp_path / "acme.cedar").write_text(
        '@id("acme-http-hosts") forbid (principal, action, resource == Tool::"http_fetch")\n'
        'unless { context.urls.url.host == "docs.python.org" };\n'
    )
    body = (
        '{"org_id": "acme", "user_id": "alice", "role": "operator", "tool": "http_fetch",'
        ' "arguments": {"url": "https://evil.example/"}, "task_id": "t-1"}'
    )

    assert (check_request(body, tmp_path).effect, check_request(body, tmp_path).rule) == (
        PolicyEffect.DENY,
        "acme-http-hosts",
    )
    assert check_request(body).rule == "http-fetch-operators"
    assert check_request(body.replace('"acme"', '"globex"'), tmp_path).rule == "http-fetch-operators"


def test_check_names_each_bad_field() -> None:
    with pytest.raises(PolicyRequestError) as raised:
        parse_request('{"org_id": "", "role": "viewer", "tool": "calculator", "arguments": [], "extra": 1}')

    message = str(raised.value)
    for field in ("org_id", "user_id", "arguments", "extra"):
        assert f"{field}:" in message


def test_check_refuses_what_is_not_json() -> None:
    with pytest.raises(PolicyRequestError, match=r"not a policy request: \(body\): Invalid JSON"):
        parse_request("{org_id: acme")
