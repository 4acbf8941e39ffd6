"""Folding a stream of chat-completion chunks back into the complete response body (pure)."""

from __future__ import annotations

import pytest

from processors.llm.streaming import channel, fold_chunks


def _chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    return {
        "id": "c1",
        "created": 7,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def test_content_deltas_join_and_usage_comes_from_the_last_chunk() -> None:
    body = fold_chunks(
        [
            _chunk({"role": "assistant", "content": ""}),
            _chunk({"content": "Hello"}),
            _chunk({"content": ", world"}),
            _chunk({}, "stop"),
            {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        ]
    )
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello, world"}, "finish_reason": "stop"}
    ]
    assert (body["id"], body["model"], body["created"], body["usage"]["completion_tokens"]) == (
        "c1",
        "m",
        7,
        2,
    )


def test_tool_call_fragments_are_merged_by_index() -> None:
    body = fold_chunks(
        [
            _chunk(
                {"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "calc", "arguments": '{"e"'}}]}
            ),
            _chunk(
                {"tool_calls": [{"index": 1, "id": "t2", "function": {"name": "other", "arguments": "{}"}}]}
            ),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': "1+1"}'}}]}),
            _chunk({}, "tool_calls"),
        ]
    )
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]] == [
        ("t1", "calc", '{"e": "1+1"}'),
        ("t2", "other", "{}"),
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_an_empty_stream_is_an_error_and_channels_are_per_task() -> None:
    with pytest.raises(ValueError, match="no chunks"):
        fold_chunks([])
    assert channel("t-1") == "agentlog:stream:t-1"
