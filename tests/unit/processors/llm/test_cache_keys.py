"""Prompt-cache keys (pure): what makes two calls the same, and which are eligible for semantic hits."""

from __future__ import annotations

import json

import pytest

from processors.llm.budget import to_micro
from processors.llm.cache import probe_for
from schemas.events import ModelTier

FIRST_TURN = json.dumps([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}])


def test_the_exact_key_depends_on_tier_tools_format_and_conversation() -> None:
    base = probe_for(ModelTier.SMALL, ["calculator"], None, FIRST_TURN)
    assert probe_for(ModelTier.SMALL, ["calculator"], None, FIRST_TURN) == base
    others = [
        probe_for(ModelTier.LARGE, ["calculator"], None, FIRST_TURN),
        probe_for(ModelTier.SMALL, [], None, FIRST_TURN),
        probe_for(ModelTier.SMALL, ["calculator"], '{"type":"json_object"}', FIRST_TURN),
        probe_for(ModelTier.SMALL, ["calculator"], None, FIRST_TURN.replace("hi", "ho")),
    ]
    assert len({base.exact_key, *(o.exact_key for o in others)}) == 5


def test_a_first_turn_is_eligible_for_semantic_hits_scoped_by_system_prompt() -> None:
    probe = probe_for(ModelTier.SMALL, [], None, FIRST_TURN)
    assert probe.semantic_text == "hi there"
    other_system = probe_for(ModelTier.SMALL, [], None, FIRST_TURN.replace("be brief", "be long"))
    other_user = probe_for(ModelTier.SMALL, [], None, FIRST_TURN.replace("hi there", "hello"))
    assert other_system.semantic_scope != probe.semantic_scope
    assert other_user.semantic_scope == probe.semantic_scope


def test_texts_with_different_numbers_never_share_a_semantic_scope() -> None:
    def scope(text: str) -> str | None:
        return probe_for(
            ModelTier.SMALL, [], None, json.dumps([{"role": "user", "content": text}])
        ).semantic_scope

    assert scope("Convert 5 miles to km") != scope("Convert 6 miles to km")
    assert scope("Convert 5 miles to km") == scope("convert 5 miles into km")


def test_a_later_turn_is_exact_only() -> None:
    later = json.dumps(
        [
            {"role": "user", "content": "2+2"},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "tool", "tool_call_id": "c", "content": "4"},
        ]
    )
    probe = probe_for(ModelTier.SMALL, ["calculator"], None, later)
    assert (probe.semantic_scope, probe.semantic_text) == (None, None)


def test_micro_usd_rounds_up_and_refuses_negative_amounts() -> None:
    assert to_micro(0.0000011) == 2
    assert to_micro(1.5) == 1_500_000
    with pytest.raises(ValueError, match="-1"):
        to_micro(-1)
