"""The LLM gateway: performs a recorded ``LlmCallRequested`` through the ``openai`` SDK.

The request event holds everything the call needs (model, messages, offered tools), so the call is
a function of the event; the answer comes back as a command for the decider, never as state.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import httpx
import openai
from openai import AsyncOpenAI

from processors.llm import offline
from processors.task.decider import RecordModelFailure, RecordModelResponse, ToolCall
from processors.tools.registry import get_tool
from schemas.events import LlmCallRequested
from streams.settings import Settings

OFFLINE_PROVIDER = "offline"


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
        )

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, request: LlmCallRequested) -> RecordModelResponse | RecordModelFailure:
        """Perform the call; provider errors come back as a failure command, not an exception."""
        started = time.perf_counter()
        tools = [get_tool(name).openai_spec() for name in request.tools]
        try:
            response = await self._client.chat.completions.create(
                model=request.model,
                messages=json.loads(request.messages_json),
                tools=cast(Any, tools) if tools else openai.omit,
                extra_headers={"Idempotency-Key": request.idempotency_key},
            )
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            return RecordModelFailure(
                idempotency_key=request.idempotency_key,
                error_type=type(exc).__name__,
                error=str(exc),
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        latency_ms = (time.perf_counter() - started) * 1000
        if not response.choices:
            return RecordModelFailure(
                idempotency_key=request.idempotency_key,
                error_type="EmptyResponse",
                error="the provider answered with no choices",
                latency_ms=latency_ms,
            )
        choice = response.choices[0]
        calls = tuple(
            ToolCall(id=call.id, name=call.function.name, arguments_json=call.function.arguments or "{}")
            for call in choice.message.tool_calls or ()
            if call.type == "function"
        )
        usage = response.usage
        return RecordModelResponse(
            idempotency_key=request.idempotency_key,
            model=response.model,
            content=choice.message.content,
            tool_calls=calls,
            finish_reason=choice.finish_reason or "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
            response_json=response.model_dump_json(),
        )
