"""The effect ledger: what the log records of each LLM and tool call, against a provider's counts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from audit.effects import EffectLedger, RecordedEffect, check_effects, task_of_key
from schemas.events import (
    Envelope,
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    Payload,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallDenied,
    ToolCallFailed,
    ToolCallRequested,
)

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TASK = "task-a"


def events(*payloads: Payload, task_id: str = TASK) -> list[Event]:
    return [
        Event(
            envelope=Envelope(
                event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{task_id}/{sequence}"),
                task_id=task_id,
                org_id="acme",
                user_id="alice",
                sequence=sequence,
                occurred_at=T0 + timedelta(seconds=sequence),
                correlation_id=task_id,
                producer="test",
                producer_version="0",
            ),
            payload=payload,
            digest=f"d{sequence}",
        )
        for sequence, payload in enumerate(payloads, start=1)
    ]


def requested(key: str, attempt: int = 1) -> LlmCallRequested:
    return LlmCallRequested(
        step=1, idempotency_key=key, provider="p", model="m", messages_json="[]", attempt=attempt
    )


def completed(
    key: str, *, cache_hit: bool = False, offline: bool = False, attempt: int = 1
) -> LlmCallCompleted:
    return LlmCallCompleted(
        step=1,
        idempotency_key=key,
        provider="p",
        model="m",
        finish_reason="stop",
        prompt_tokens=1,
        completion_tokens=1,
        total_tokens=2,
        latency_ms=1.0,
        cache_hit=cache_hit,
        attempt=attempt,
        offline=offline,
        response_json="{}",
    )


def failed(key: str, attempt: int = 1) -> LlmCallFailed:
    return LlmCallFailed(
        step=1,
        idempotency_key=key,
        provider="p",
        model="m",
        error_type="APIStatusError",
        error="500",
        latency_ms=1.0,
        attempt=attempt,
        retryable=True,
    )


def tool_fields(key: str, tool: str) -> dict[str, object]:
    return {"step": 1, "idempotency_key": key, "tool_call_id": key.rsplit("-", 1)[-1], "tool": tool}


def fetch_call(key: str, *, outcome: str = "completed", tool: str = "http_fetch") -> list[Payload]:
    """A tool call's events: requested, then authorized and completed (or denied)."""
    fields = tool_fields(key, tool)
    asked: list[Payload] = [ToolCallRequested(**fields, arguments_json='{"url": "http://x/"}')]
    if outcome == "denied":
        return [*asked, ToolCallDenied(**fields, rule="r", reason="no")]
    return [
        *asked,
        ToolCallAuthorized(**fields, rule="r"),
        ToolCallCompleted(**fields, output="ok", latency_ms=1.0),
    ]


def ledger(*payloads: Payload) -> dict[str, RecordedEffect]:
    return EffectLedger().add_all(events(*payloads)).effects()


def kinds(recorded: dict[str, RecordedEffect], calls: dict[str, int], **options: object) -> dict[str, str]:
    return {d.key: d.kind for d in check_effects(recorded, calls, **options)}  # type: ignore[arg-type]


LLM_KEY = f"{TASK}:step-1"
FETCH_KEY = f"{TASK}:step-1:tool-call_0_0"


def test_each_completed_effect_called_once_is_in_order() -> None:
    recorded = ledger(requested(LLM_KEY), completed(LLM_KEY), *fetch_call(FETCH_KEY))

    assert recorded[LLM_KEY] == RecordedEffect(LLM_KEY, TASK, "llm", attempts=1, completed=True)
    assert recorded[FETCH_KEY] == RecordedEffect(FETCH_KEY, TASK, "http_fetch", attempts=1, completed=True)
    assert check_effects(recorded, {LLM_KEY: 1, FETCH_KEY: 1}) == []


def test_a_completed_effect_the_provider_never_saw_is_reported() -> None:
    recorded = ledger(requested(LLM_KEY), completed(LLM_KEY), *fetch_call(FETCH_KEY))

    (llm, fetch) = check_effects(recorded, {})

    assert (fetch.key, fetch.kind, fetch.effect, fetch.allowed, fetch.calls) == (
        FETCH_KEY,
        "effect_not_made",
        "http_fetch",
        "1",
        0,
    )
    assert (llm.key, llm.kind, llm.effect) == (LLM_KEY, "effect_not_made", "llm")


def test_cache_hits_and_the_offline_model_make_no_call() -> None:
    cached, offline = f"{TASK}:step-1", f"{TASK}:step-2"
    recorded = ledger(
        requested(cached),
        completed(cached, cache_hit=True),
        requested(offline),
        completed(offline, offline=True),
    )

    assert check_effects(recorded, {}) == []
    # A call is still allowed (the attempt may have reached a provider before the cache had it).
    assert check_effects(recorded, {cached: 1}) == []


def test_a_second_call_is_allowed_only_for_a_key_in_flight_at_a_crash() -> None:
    recorded = ledger(requested(LLM_KEY), completed(LLM_KEY), *fetch_call(FETCH_KEY))
    twice = {LLM_KEY: 2, FETCH_KEY: 2}

    assert kinds(recorded, twice) == {LLM_KEY: "effect_repeated", FETCH_KEY: "effect_repeated"}
    assert kinds(recorded, twice, in_flight={LLM_KEY}) == {FETCH_KEY: "effect_repeated"}
    assert check_effects(recorded, twice, in_flight={LLM_KEY, FETCH_KEY}) == []


def test_no_crash_explains_a_third_call() -> None:
    recorded = ledger(requested(LLM_KEY), completed(LLM_KEY))

    (difference,) = check_effects(recorded, {LLM_KEY: 3}, in_flight={LLM_KEY})

    assert (difference.kind, difference.allowed, difference.calls) == ("effect_too_often", "1", 3)


def test_each_recorded_retry_is_one_more_call_under_the_same_key() -> None:
    recorded = ledger(
        requested(LLM_KEY), failed(LLM_KEY), requested(LLM_KEY, 2), completed(LLM_KEY, attempt=2)
    )

    assert recorded[LLM_KEY].attempts == 2
    assert check_effects(recorded, {LLM_KEY: 2}) == []
    assert check_effects(recorded, {LLM_KEY: 1}) == []  # the failed attempt may not have got through
    assert kinds(recorded, {LLM_KEY: 3}) == {LLM_KEY: "effect_repeated"}


def test_a_tool_retry_is_scheduled_by_its_retryable_failure() -> None:
    fields = tool_fields(FETCH_KEY, "http_fetch")
    recorded = ledger(
        ToolCallRequested(**fields, arguments_json="{}"),
        ToolCallAuthorized(**fields, rule="r"),
        ToolCallFailed(**fields, error_type="HttpFetchTimeout", error="slow", latency_ms=1.0, retryable=True),
        ToolCallCompleted(**fields, output="ok", latency_ms=1.0),
    )

    assert recorded[FETCH_KEY].attempts == 2
    assert check_effects(recorded, {FETCH_KEY: 2}) == []


def test_a_denied_tool_call_may_not_reach_its_provider() -> None:
    recorded = ledger(*fetch_call(FETCH_KEY, outcome="denied"))

    assert check_effects(recorded, {}) == []
    (difference,) = check_effects(recorded, {FETCH_KEY: 1})
    assert (difference.kind, difference.allowed) == ("effect_repeated", "0")


def test_tools_that_run_inside_the_platform_are_not_checked() -> None:
    key = f"{TASK}:step-1:tool-call_0_1"
    recorded = ledger(*fetch_call(key, tool="calculator"))

    assert check_effects(recorded, {}) == []
    assert kinds(recorded, {}, counted={"calculator"}) == {key: "effect_not_made"}


def test_calls_under_a_key_the_log_never_requested_are_reported_for_tasks_in_scope() -> None:
    recorded = ledger(requested(LLM_KEY), completed(LLM_KEY))
    calls = {LLM_KEY: 1, f"{TASK}:step-9": 1, "other-task:step-1": 2}

    assert kinds(recorded, calls) == {
        f"{TASK}:step-9": "effect_unrequested",
        "other-task:step-1": "effect_unrequested",
    }
    assert kinds(recorded, calls, tasks={TASK}) == {f"{TASK}:step-9": "effect_unrequested"}


def test_redelivered_and_copied_events_count_once() -> None:
    history = [requested(LLM_KEY), completed(LLM_KEY), *fetch_call(FETCH_KEY)]
    # A fork's prefix copies its source's events, keys included, under its own task id.
    delivered = events(*history) + events(*history) + events(*history, task_id="task-fork")

    recorded = EffectLedger().add_all(delivered).effects()

    assert recorded == ledger(*history)
    assert {effect.task_id for effect in recorded.values()} == {TASK}


def test_a_key_names_its_task() -> None:
    assert task_of_key("t-1:step-3") == task_of_key("t-1:agent-2:step-1:tool-c") == "t-1"


# Property: a provider that saw each effect within what the log allows shows no difference; one
# call more on a key not in flight is exactly one difference, on that key.

effect_shapes = st.lists(
    st.tuples(
        st.sampled_from(["llm", "http_fetch"]),
        st.integers(min_value=1, max_value=3),  # attempts
        st.booleans(),  # completed
        st.booleans(),  # callless (LLM only)
    ),
    min_size=1,
    max_size=8,
)


@given(effect_shapes, st.data())
def test_counts_within_the_allowance_never_differ_and_one_more_always_does(
    shapes: list[tuple[str, int, bool, bool]], data: st.DataObject
) -> None:
    recorded = {
        f"{TASK}:step-{i}": RecordedEffect(
            f"{TASK}:step-{i}", TASK, kind, attempts, completed, callless and kind == "llm"
        )
        for i, (kind, attempts, completed, callless) in enumerate(shapes)
    }
    calls = {
        key: data.draw(st.integers(min_value=effect.least_calls, max_value=effect.attempts), label=key)
        for key, effect in recorded.items()
    }
    in_flight = {key for key in recorded if data.draw(st.booleans(), label=f"{key} in flight")}
    crashed = {key: n + (key in in_flight) for key, n in calls.items()}

    assert check_effects(recorded, calls) == []
    assert check_effects(recorded, crashed, in_flight=in_flight) == []

    victim = data.draw(st.sampled_from(sorted(recorded)), label="victim")
    more = dict(calls, **{victim: recorded[victim].attempts + 1})
    assert kinds(recorded, more, in_flight=in_flight - {victim}) == {victim: "effect_repeated"}
    most = dict(more, **{victim: recorded[victim].attempts + 2})
    assert kinds(recorded, most, in_flight=in_flight) == {victim: "effect_too_often"}
