"""The offline planner: a deterministic OpenAI-compatible chat-completions server on loopback.

It is the default provider when no LLM endpoint is configured, so agentlog runs end to end on a
machine with no network, through the real ``openai`` SDK. Every answer is labelled offline.
Behaviour: if the task contains an arithmetic expression and the ``calculator`` tool is offered,
the first answer is a tool call; once a tool result is in the conversation, the answer states it.
Anything else gets a deterministic plan-style answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from processors.task.planning import MERGE_PREFIX, request_parts

MODEL = "agentlog-offline-planner"
LABEL = "[offline planner]"
_EXPRESSION = re.compile(r"[-+(]*\d[\d.\s()+\-*/%]*")


class ChatRequest(BaseModel):
    model: str = MODEL
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    response_format: dict[str, Any] | None = None


def find_expression(text: str) -> str | None:
    """The longest arithmetic expression in ``text`` with at least one operator, if any."""
    candidates = [m.group().strip().rstrip("=?.") for m in _EXPRESSION.finditer(text)]
    arithmetic = [c for c in candidates if re.search(r"\d\s*(\*\*|//|[-+*/%])\s*[-+(]*\d", c)]
    return max(arithmetic, key=len) if arithmetic else None


def _tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").split()) + 4 for m in messages)


_DEPENDS = re.compile(r"\b(both|all|results?|previous|above|summari[sz]e|combine|then)\b", re.IGNORECASE)


def plan(query: str) -> dict[str, Any]:
    """A plan with one subtask per request in ``query``; a part that refers back to earlier results
    ("both", "the results", "then ...") depends on every part before it."""
    subtasks: list[dict[str, Any]] = []
    for index, part in enumerate(request_parts(query) or [query]):
        earlier = [s["id"] for s in subtasks]
        subtasks.append(
            {
                "id": f"s{index + 1}",
                "description": part,
                "agent": "calculator" if find_expression(part) else "writer",
                "depends_on": earlier if earlier and _DEPENDS.search(part) else [],
            }
        )
    return {"rationale": f"{LABEL} one subtask per request in the task", "subtasks": subtasks}


def answer(request: ChatRequest) -> dict[str, Any]:
    """The deterministic chat completion for ``request`` (OpenAI response shape)."""
    user = next((m for m in reversed(request.messages) if m.get("role") == "user"), {"content": ""})
    query = str(user.get("content") or "")
    tool_results = [m for m in request.messages if m.get("role") == "tool"]
    offered = {t.get("function", {}).get("name") for t in request.tools}
    message: dict[str, Any] = {"role": "assistant", "content": None}
    task = query.split("\n\nResults you can use:")[0]
    expression = find_expression(task)
    if request.response_format is not None:
        message["content"] = json.dumps(plan(query))
        finish = "stop"
    elif query.startswith(MERGE_PREFIX):
        results = query.split("Results:\n", 1)[-1]
        message["content"] = f"{LABEL} Combined answer:\n{results}"
        finish = "stop"
    elif "\n\nResults you can use:" in query and not expression:
        inputs = query.split("\n\nResults you can use:\n", 1)[-1]
        message["content"] = f"{LABEL} {task}: from the results so far:\n{inputs}"
        finish = "stop"
    elif tool_results:
        message["content"] = f"{LABEL} The result is {tool_results[-1].get('content')}."
        finish = "stop"
    elif expression and "calculator" in offered:
        call_id = "call_" + hashlib.sha256(expression.encode()).hexdigest()[:12]
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "calculator", "arguments": json.dumps({"expression": expression})},
            }
        ]
        finish = "tool_calls"
    else:
        message["content"] = (
            f"{LABEL} No LLM endpoint is configured, so this is a deterministic offline answer. "
            f"Plan for {query!r}: 1. understand the request; 2. gather what is needed; 3. respond."
        )
        finish = "stop"
    prompt_tokens = _tokens(request.messages)
    completion_tokens = len(json.dumps(message).split())
    digest = hashlib.sha256(json.dumps(request.messages, sort_keys=True).encode()).hexdigest()[:24]
    return {
        "id": f"chatcmpl-offline-{digest}",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "agentlog-offline",
    }


def create_app() -> FastAPI:
    app = FastAPI(title="agentlog offline planner (OpenAI-compatible, deterministic, no network)")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "agentlog"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest) -> dict[str, Any]:
        return answer(request)

    return app
