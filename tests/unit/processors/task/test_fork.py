"""The decider on a fork: given a copied prefix / when ForkTask / then TaskForked and the re-requests."""

from __future__ import annotations

import json

import pytest

from audit.fork import copy_prefix
from processors.task.commands import (
    AuthorizeTool,
    CallModel,
    ForkTask,
    RecordPolicyDecision,
    RecordToolResult,
)
from processors.task.decider import decide, evolve, fold, idempotency_key, pending_effects
from processors.task.history import stamp
from processors.task.state import HistoryError, Status
from schemas.events import LlmCallRequested, ModelTier, TaskAccepted, TaskForked, ToolCallRequested
from tests.unit.processors.helpers import T0, types, when
from tests.unit.processors.task.forking import FORK_ID, START, answer, forked, source


def test_a_fork_inside_a_pending_llm_call_records_the_branch_and_asks_again_under_its_own_key() -> None:
    state, history, payloads = forked(3, model="bigger-model")
    assert types(payloads) == ["TaskForked", "LlmCallRequested"]
    fork_event, request = payloads
    assert isinstance(fork_event, TaskForked) and isinstance(request, LlmCallRequested)
    assert history[3].sequence == 3 and history[3].event_type == "TaskForked"
    assert fork_event.source_task_id == "source-1" and fork_event.prefix_events == 3
    assert fork_event.reissued == ["source-1:step-1"]
    assert request.idempotency_key == idempotency_key(FORK_ID, 1) == "fork-1:step-1"
    assert request.model == "bigger-model" and request.messages_json == "[]" and request.attempt == 1
    assert request.pinned_model == "bigger-model"  # the gateway routes it to that model, not by tier
    assert state.forked_from == "source-1" and state.forked_at == 3 and state.model == "bigger-model"
    [effect] = pending_effects(state)
    assert isinstance(effect, CallModel) and effect.request == request
    # the conversation sent is the source's prompt, unchanged
    assert [m["role"] for m in json.loads(effect.messages_json)] == ["system", "user"]


def test_the_fork_continues_to_the_end_with_its_own_answers() -> None:
    state, history, _ = forked(3, model="bigger-model")
    state, payloads = when(state, answer(state, "Forty-two.", model="bigger-model"), history)
    assert types(payloads) == ["LlmCallCompleted", "TaskCompleted"]
    assert state.status is Status.COMPLETED and state.result == "Forty-two."
    assert [e.sequence for e in history] == list(range(len(history)))


def test_a_pending_tool_call_is_requested_again_and_goes_through_the_policy_again() -> None:
    state, history, payloads = forked(6)  # authorized in the source, not yet run
    assert types(payloads) == ["TaskForked", "ToolCallRequested"]
    request = payloads[1]
    assert isinstance(request, ToolCallRequested)
    assert request.idempotency_key == "fork-1:step-1:tool-c1" and request.tool_call_id == "c1"
    [effect] = pending_effects(state)
    assert isinstance(effect, AuthorizeTool) and effect.request == request
    state, _ = when(
        state,
        RecordPolicyDecision(idempotency_key=request.idempotency_key, effect="allow", rule="t"),
        history,
    )
    state, payloads = when(
        state, RecordToolResult(idempotency_key=request.idempotency_key, output="42", latency_ms=1.0), history
    )
    assert types(payloads) == ["ToolCallCompleted", "LlmCallRequested"]
    assert payloads[1].idempotency_key == "fork-1:step-2"  # type: ignore[attr-defined]


def test_a_late_answer_to_the_sources_request_is_ignored_by_the_fork() -> None:
    original, _, _ = forked(3)
    source_answer = answer(original).model_copy(update={"idempotency_key": "source-1:step-1"})
    assert decide(source_answer, original) == []


def test_input_before_the_first_call_replaces_the_query() -> None:
    state, history, payloads = forked(
        1, input="What is 6 * 9?", model="bigger-model", overrides={"max_steps": "2"}
    )
    assert types(payloads) == ["TaskForked"]
    assert state.status is Status.SUBMITTED and state.query == "What is 6 * 9?"
    state, payloads = when(state, START, history)
    accepted, request = payloads
    assert isinstance(accepted, TaskAccepted) and isinstance(request, LlmCallRequested)
    assert accepted.model == "bigger-model" and accepted.max_steps == 2
    assert "6 * 9" in request.messages_json and request.idempotency_key == "fork-1:step-1"


def test_input_at_a_pending_main_call_is_added_as_a_user_message() -> None:
    state, _, payloads = forked(8, input="Answer in words.")
    request = payloads[1]
    assert isinstance(request, LlmCallRequested) and request.step == 2
    assert json.loads(request.messages_json) == [{"role": "user", "content": "Answer in words."}]
    assert json.loads(state.main.messages[-1]) == {"role": "user", "content": "Answer in words."}
    assert request.prompt_messages == len(state.main.messages)


def test_settings_change_the_state_from_the_branch_on() -> None:
    state, _, payloads = forked(3, overrides={"max_steps": "9", "tier": "large", "token_budget": "5000"})
    assert state.max_steps == 9 and state.tier is ModelTier.LARGE and state.token_budget == 5000
    assert payloads[1].tier is ModelTier.LARGE  # type: ignore[attr-defined]


def test_forking_twice_is_a_no_op() -> None:
    state, _, _ = forked(3)
    again = ForkTask(source_task_id="source-1", prefix_events=3, forked_by="x")
    assert decide(again, state) == []


def test_a_fork_of_an_ended_prefix_decides_nothing() -> None:
    ended = fold(event for event, _ in copy_prefix(source(), 10, task_id=FORK_ID))
    assert decide(ForkTask(source_task_id="source-1", prefix_events=10, forked_by="x"), ended) == []


def test_a_recorded_fork_with_a_setting_that_is_not_settable_does_not_fold() -> None:
    prefix = fold(event for event, _ in copy_prefix(source(), 3, task_id=FORK_ID))
    bad = TaskForked(
        source_task_id="source-1", prefix_events=3, forked_by="x", overrides={"user_role": "admin"}
    )
    [(event, _)] = stamp(prefix, [bad], now=T0, producer="t", producer_version="0")
    with pytest.raises(HistoryError, match="not settable"):
        evolve(prefix, event)
