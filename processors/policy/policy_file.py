"""One Cedar policy file, parsed and checked: its rules in file order, keyed by their ``@id``.

Pure over the file's text. Every policy must carry ``@id("...")``: that id is what the events record
as the rule that decided, so a policy without one (or with a duplicate) is refused at load.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import cedarpy

from processors.policy.decision import RESERVED_RULE_IDS

RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
# id: the rule id; reason: the text a decision by this rule gives; approval: a permit that only
# lets the call through after a human approved it.
ANNOTATIONS = frozenset({"id", "reason", "approval"})


class PolicyFileError(ValueError):
    """A policy file does not parse or breaks one of the engine's rules; names the file."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


@dataclass(frozen=True)
class Rule:
    id: str
    effect: Literal["permit", "forbid"]
    approval: bool
    reason: str | None
    source: str


@dataclass(frozen=True)
class PolicyFile:
    source: str
    rules: tuple[Rule, ...]
    # Cedar's JSON policy format (EST) of each rule, keyed by rule id: the engine builds its policy
    # sets from these so that Cedar's own diagnostics name rules by their ids.
    policies: dict[str, dict[str, Any]]


def parse_policy_file(text: str, source: str) -> PolicyFile:
    """The rules of one policy file; raises :class:`PolicyFileError` naming ``source``."""
    try:
        est = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise PolicyFileError(source, f"{_locate(text)}{exc}") from None
    if est.get("templates"):
        raise PolicyFileError(source, "policy templates (?principal, ?resource) are not supported")
    rules: list[Rule] = []
    policies: dict[str, dict[str, Any]] = {}
    # The parser numbers policies policy0, policy1, ... in file order; that order breaks ties.
    for position, (_, policy) in enumerate(sorted(est["staticPolicies"].items(), key=_position)):
        rule = _rule(policy, source, position)
        if rule.id in policies:
            raise PolicyFileError(source, f"rule id {rule.id!r} is used twice")
        rules.append(rule)
        policies[rule.id] = policy
    return PolicyFile(source=source, rules=tuple(rules), policies=policies)


def _position(item: tuple[str, Any]) -> int:
    return int(item[0].removeprefix("policy"))


def _rule(policy: dict[str, Any], source: str, position: int) -> Rule:
    effect = policy["effect"]
    annotations: dict[str, str | None] = policy.get("annotations", {})
    where = f"policy #{position + 1} ({effect})"
    unknown = sorted(set(annotations) - ANNOTATIONS)
    if unknown:
        raise PolicyFileError(
            source, f"{where}: unknown annotation(s) {unknown}; known: {sorted(ANNOTATIONS)}"
        )
    rule_id = annotations.get("id")
    if not rule_id:
        raise PolicyFileError(source, f'{where} has no @id("...") annotation')
    if not RULE_ID.match(rule_id):
        raise PolicyFileError(source, f"{where}: rule id {rule_id!r} does not match {RULE_ID.pattern}")
    if rule_id in RESERVED_RULE_IDS:
        raise PolicyFileError(source, f"{where}: rule id {rule_id!r} is reserved for the engine")
    approval = "approval" in annotations
    if approval and annotations["approval"]:
        raise PolicyFileError(source, f"{where} {rule_id!r}: @approval takes no value")
    if approval and effect != "permit":
        raise PolicyFileError(source, f"{where} {rule_id!r}: @approval only makes sense on a permit")
    return Rule(rule_id, effect, approval, annotations.get("reason") or None, source)


def _locate(text: str) -> str:
    """``"lines A-B: "`` of the first statement that fails to parse alone, or ``""``.

    cedarpy's parse errors carry no position; parsing statement by statement finds the culprit.
    """
    for first, last, statement in _statements(text):
        try:
            cedarpy.policies_to_json_str(statement)
        except ValueError:
            return f"line {first}: " if first == last else f"lines {first}-{last}: "
    return ""


def _statements(text: str) -> list[tuple[int, int, str]]:
    """``(first line, last line, text)`` of each ``;``-terminated statement, strings and comments skipped."""
    statements: list[tuple[int, int, str]] = []
    start = 0
    in_string = in_comment = escaped = False
    for index, char in enumerate(text):
        if in_comment:
            in_comment = char != "\n"
        elif in_string:
            in_string = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            in_string = True
        elif text.startswith("//", index):
            in_comment = True
        elif char == ";":
            statements.append(_span(text, start, index + 1))
            start = index + 1
    if text[start:].strip():
        statements.append(_span(text, start, len(text)))
    return statements


def _span(text: str, start: int, end: int) -> tuple[int, int, str]:
    chunk = text[start:end]
    # The statement starts at its first line that is neither blank nor a comment.
    skipped = 0
    for line in chunk.splitlines(keepends=True):
        if line.strip() and not line.lstrip().startswith("//"):
            break
        skipped += len(line)
    first = text.count("\n", 0, start + skipped) + 1
    return first, max(first, text.count("\n", 0, end - 1) + 1), chunk
