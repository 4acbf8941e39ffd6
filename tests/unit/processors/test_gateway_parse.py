"""The gateway turns a provider's response body into a decider command, recording the body verbatim."""

from __future__ import annotations

import json

from processors.llm.gateway import _parse_completion
from processors.task.decider import RecordModelFailure, RecordModelResponse


def _body(message: dict[str, object], finish: str = "stop") -> str:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "model": "gpt-test",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }
    )


def test_a_tool_call_answer_becomes_a_response_with_its_calls_and_the_exact_body() -> None:
    body = _body(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"e": 1}'}}
            ],
        },
        finish="tool_calls",
    )
    command = _parse_completion("task/1", body, 3.5)
    assert isinstance(command, RecordModelResponse)
    assert [(c.id, c.name, c.arguments_json) for c in command.tool_calls] == [
        ("c1", "calculator", '{"e": 1}')
    ]
    assert (command.model, command.finish_reason, command.prompt_tokens, command.completion_tokens) == (
        "gpt-test",
        "tool_calls",
        11,
        7,
    )
    assert command.response_json == body
    assert command.latency_ms == 3.5


def test_a_text_answer_keeps_its_content() -> None:
    command = _parse_completion("task/2", _body({"role": "assistant", "content": "42"}), 1.0)
    assert isinstance(command, RecordModelResponse)
    assert command.content == "42" and command.tool_calls == ()


def test_no_choices_is_a_failure_not_an_exception() -> None:
    command = _parse_completion("task/3", json.dumps({"choices": []}), 1.0)
    assert isinstance(command, RecordModelFailure)
    assert command.error_type == "EmptyResponse"
