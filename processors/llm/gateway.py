"""The LLM gateway: performs a recorded ``LlmCallRequested`` through the ``openai`` SDK.

The call is a function of the request event (model, offered tools) and the conversation folded from
the task's history up to it; the answer comes back as a command for the decider, never as state.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient

from processors.llm import offline
from processors.task.decider import RecordModelFailure, RecordModelResponse, ToolCall
from processors.tools.registry import get_tool
from schemas.events import LlmCallRequested
from streams.settings import Settings

OFFLINE_PROVIDER = "offline"
JSON = "application/json"


class LlmGateway:
    """One OpenAI-compatible endpoint (the offline planner when none is configured)."""

    def __init__(self, settings: Settings) -> None:
        self.offline = settings.offline
        self.provider = OFFLINE_PROVIDER if self.offline else "openai-compatible"
        self.model = offline.MODEL if self.offline else settings.llm_model
        self._client = AsyncOpenAI(
            base_url=settings.llm_endpoint,
            api_key=settings.llm_api_key or "offline-no-key",
            timeout=settings.llm_timeout_seconds,
            max_retries=2,
            # aiohttp transport (the SDK's supported alternative to httpx): ~30 % less CPU per call.
            http_client=DefaultAioHttpClient(timeout=settings.llm_timeout_seconds),
        )
        self._tool_specs: dict[tuple[str, ...], str] = {}

    async def close(self) -> None:
        await self._client.close()

    async def complete(
        self, request: LlmCallRequested, messages_json: str
    ) -> RecordModelResponse | RecordModelFailure:
        """Perform the call with the prompt ``messages_json`` (the agent's conversation, as JSON).

        Provider errors come back as a failure command, not an exception. The conversation is
        already JSON (the decider keeps each message as JSON text), so the body is assembled from
        those bytes and posted through the SDK's client (auth, retries, timeouts and error
        types stay the SDK's) without its per-call parameter transformation, which re-walks every
        message of the conversation and cost most of the processor's CPU (docs/benchmarks.md).
        The provider's response body is recorded verbatim.
        """
        started = time.perf_counter()
        try:
            body = await self._client.post(
                "/chat/completions",
                cast_to=str,
                content=self._body(request, messages_json),
                options={
                    "headers": {
                        "Content-Type": "application/json",
                        "Idempotency-Key": request.idempotency_key,
                    }
                },
            )
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            return RecordModelFailure(
                idempotency_key=request.idempotency_key,
                error_type=type(exc).__name__,
                error=str(exc),
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            return _parse_completion(request.idempotency_key, body, latency_ms)
        except (ValueError, LookupError, TypeError) as exc:
            return RecordModelFailure(
                idempotency_key=request.idempotency_key,
                error_type="MalformedResponse",
                error=f"{type(exc).__name__}: {exc}; body starts {body[:200]!r}",
                latency_ms=latency_ms,
            )

    def _body(self, request: LlmCallRequested, messages_json: str) -> bytes:
        tools = tuple(request.tools)
        if tools not in self._tool_specs:
            specs = [get_tool(name).openai_spec() for name in tools]
            self._tool_specs[tools] = f',"tools":{json.dumps(specs)}' if specs else ""
        return (
            f'{{"model":{json.dumps(request.model)},"messages":{messages_json}{self._tool_specs[tools]}}}'
        ).encode()


def _parse_completion(
    idempotency_key: str, body: str, latency_ms: float
) -> RecordModelResponse | RecordModelFailure:
    """The decider's command for an OpenAI chat-completion response body."""
    response = json.loads(body)
    choices = response.get("choices") or []
    if not choices:
        return RecordModelFailure(
            idempotency_key=idempotency_key,
            error_type="EmptyResponse",
            error="the provider answered with no choices",
            latency_ms=latency_ms,
        )
    choice = choices[0]
    message = choice["message"]
    calls = tuple(
        ToolCall(
            id=call["id"],
            name=call["function"]["name"],
            arguments_json=call["function"].get("arguments") or "{}",
        )
        for call in message.get("tool_calls") or ()
        if call.get("type", "function") == "function"
    )
    usage = response.get("usage") or {}
    return RecordModelResponse(
        idempotency_key=idempotency_key,
        model=str(response.get("model") or ""),
        content=message.get("content"),
        tool_calls=calls,
        finish_reason=choice.get("finish_reason") or "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        latency_ms=latency_ms,
        response_json=body,
    )
