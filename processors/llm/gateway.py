"""The LLM gateway: performs a recorded ``LlmCallRequested`` through the ``openai`` SDK.

The call is a function of the request event (tier, offered tools) and the conversation folded from
the task's history up to it; the answer comes back as a command for the decider, never as state.
One call: the prompt cache (exact, then semantic) -> the providers serving the request's tier by
priority, skipping those whose circuit breaker is open -> at each, bounded retries with exponential
backoff and jitter on retryable errors -> the next provider. See docs/llm-gateway.md.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import openai
from openai import AsyncOpenAI, AsyncStream, DefaultAioHttpClient
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from processors.llm.breaker import Breaker, BreakerPolicy, allow, available, record
from processors.llm.budget import BudgetLedger, BudgetVerdict
from processors.llm.cache import CachedAnswer, CacheProbe, PromptCache, probe_for
from processors.llm.cost import cost_usd, estimate_usd
from processors.llm.embedding import shared_embedder
from processors.llm.providers import (
    DEFAULT_PROVIDERS_FILE,
    ModelPrice,
    ProviderConfig,
    Providers,
    load_providers,
)
from processors.llm.routing import MalformedResponse, NoProviderForTier, Route, is_retryable, routes_for
from processors.llm.streaming import TokenPublisher, fold_chunks
from processors.task.decider import RecordModelFailure, RecordModelResponse, ToolCall
from processors.tools.registry import get_tool
from schemas.events import LlmCallRequested, ModelTier
from streams.metrics import (
    BREAKER_STATE_VALUES,
    CIRCUIT_BREAKER_STATE,
    LLM_CACHE_REQUESTS,
    LLM_CALL_DURATION,
    LLM_CALL_ERRORS,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

JSON = "application/json"

ModelCommand = RecordModelResponse | RecordModelFailure


class GatewaySettings(BaseModel):
    """The gateway's own knobs; the platform sets them through ``Settings`` (``AGENTLOG_LLM_*``)."""

    model_config = ConfigDict(frozen=True)

    providers_file: Path | None = Field(default=None, description="YAML providers file (providers.py).")
    attempts_per_provider: int = Field(default=3, ge=1)
    backoff_initial_seconds: float = Field(default=0.2, ge=0)
    backoff_max_seconds: float = Field(default=5.0, ge=0)
    breaker_failure_ratio: float = 0.5
    breaker_min_calls: int = 4
    breaker_window_seconds: float = 30.0
    breaker_cooldown_seconds: float = 10.0
    cache_enabled: bool = True
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    cache_semantic_threshold: float = 0.95
    # Completion tokens assumed when reserving budget before a call (the settled cost is the real one).
    budget_completion_tokens: int = Field(default=1024, ge=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewaySettings:
        """The knobs as the platform's settings give them (each field is ``Settings.llm_<name>``)."""
        return cls(**{name: getattr(settings, f"llm_{name}") for name in cls.model_fields})


class OrgBudget(BaseModel):
    """The daily budget a call is charged to."""

    model_config = ConfigDict(frozen=True)
    org_id: str
    day: date
    limit_usd: float = Field(gt=0)


@dataclass(frozen=True)
class BudgetedCall:
    """A call made against a budget: ``verdict`` None for a cache hit (free, nothing reserved);
    ``command`` None when the budget refused the call (no request was made)."""

    verdict: BudgetVerdict | None
    command: ModelCommand | None


class _AttemptFailed(Exception):
    """One provider gave up (after its retries); carries the last error for the failure message."""


def default_providers(settings: Settings) -> Providers:
    """The providers when no file is configured: the shipped offline planner, or, with
    ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` set, that one endpoint serving every tier (unpriced)."""
    shipped = load_providers(DEFAULT_PROVIDERS_FILE)
    if settings.offline:
        return Providers(
            providers=tuple(
                p.model_copy(update={"base_url": settings.llm_endpoint}) for p in shipped.providers
            )
        )
    log.warning("no AGENTLOG_LLM_PROVIDERS_FILE: one endpoint, prices unknown, costs recorded as 0")
    return Providers(
        providers=(
            ProviderConfig(
                name="openai-compatible",
                base_url=settings.llm_endpoint,
                api_key_env="OPENAI_API_KEY" if os.environ.get("OPENAI_API_KEY") else None,
                timeout_seconds=settings.llm_timeout_seconds,
                models=dict.fromkeys(ModelTier, settings.llm_model),
                prices={settings.llm_model: ModelPrice(prompt_per_1k=0.0, completion_per_1k=0.0)},
            ),
        )
    )


class LlmGateway:
    """Every model call of a processor: cache, routing, retries, fallback, breakers, accounting."""

    def __init__(
        self,
        settings: Settings,
        *,
        gateway_settings: GatewaySettings | None = None,
        providers: Providers | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = gateway_settings or GatewaySettings.from_settings(settings)
        if providers is None:
            file = self.settings.providers_file
            providers = load_providers(file) if file is not None else default_providers(settings)
        self.providers = providers
        first = min(providers.providers, key=lambda p: p.priority)
        # What StartTask records as the task's provider and model: the first choice for MEDIUM.
        self.provider = first.name
        self.model = first.models.get(ModelTier.MEDIUM) or next(iter(first.models.values()))
        self.offline = settings.offline and self.settings.providers_file is None
        self._clock = clock
        self._policy = BreakerPolicy(
            failure_ratio=self.settings.breaker_failure_ratio,
            min_calls=self.settings.breaker_min_calls,
            window_seconds=self.settings.breaker_window_seconds,
            cooldown_seconds=self.settings.breaker_cooldown_seconds,
        )
        self.breakers: dict[str, Breaker] = {p.name: Breaker() for p in providers.providers}
        for name in self.breakers:
            self._export_breaker(name)
        self._clients = {p.name: self._client(p) for p in providers.providers}
        # Short socket timeouts: a Redis outage must cost a call milliseconds, not seconds.
        self._redis = Redis.from_url(settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.cache = (
            PromptCache(
                self._redis,
                shared_embedder(),
                wall_clock,
                ttl_seconds=self.settings.cache_ttl_seconds,
                threshold=self.settings.cache_semantic_threshold,
            )
            if self.settings.cache_enabled
            else None
        )
        self.budget = BudgetLedger(self._redis)
        self._tokens = TokenPublisher(self._redis)
        self._tool_specs: dict[tuple[str, ...], str] = {}

    @staticmethod
    def _client(provider: ProviderConfig) -> AsyncOpenAI:
        return AsyncOpenAI(
            base_url=provider.base_url,
            api_key=provider.api_key(),
            timeout=provider.timeout_seconds,
            max_retries=0,  # retries are the gateway's (tenacity), so fallback and breakers see each one
            # aiohttp transport (the SDK's supported alternative to httpx): ~30 % less CPU per call.
            http_client=DefaultAioHttpClient(timeout=provider.timeout_seconds),
        )

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        await self._redis.aclose()

    async def complete(
        self, request: LlmCallRequested, messages_json: str, *, stream_task_id: str | None = None
    ) -> ModelCommand:
        """Perform the call with the prompt ``messages_json`` (the agent's conversation, as JSON).

        Provider errors come back as a failure command, not an exception. A cache hit comes back
        with ``cache_kind`` set, zero cost and no provider called. With ``stream_task_id`` the
        answer is streamed and its tokens published on ``agentlog:stream:<task_id>`` as they come
        (processors/llm/streaming.py); the command is the same complete response either way.
        """
        started = time.perf_counter()
        probe = self._probe(request, messages_json)
        hit = await self._cached(request, probe, started)
        if hit is not None:
            return hit
        return await self._call(request, messages_json, probe, started, stream_task_id)

    async def complete_within_budget(
        self, request: LlmCallRequested, messages_json: str, budget: OrgBudget
    ) -> BudgetedCall:
        """:meth:`complete`, charged to ``budget``: the estimated cost (at the first provider's price)
        is reserved first and the call not made when that would exceed the limit; afterwards the
        reservation is settled with the actual cost. Raises ``BudgetLedgerUnavailable`` when Redis
        is down (fail closed: see processors/llm/budget.py)."""
        started = time.perf_counter()
        probe = self._probe(request, messages_json)
        hit = await self._cached(request, probe, started)
        if hit is not None:
            return BudgetedCall(None, hit)
        try:
            candidates = routes_for(self.providers, request.tier, request.pinned_model, lambda _: True)
        except NoProviderForTier as exc:
            return BudgetedCall(None, self._failure(request, type(exc).__name__, str(exc), started))
        estimate = estimate_usd(
            candidates[0].price, len(messages_json), self.settings.budget_completion_tokens
        )
        verdict = await self.budget.reserve(
            budget.org_id, budget.day, request.idempotency_key, estimate, budget.limit_usd
        )
        if not verdict.allowed:
            return BudgetedCall(verdict, None)
        command = await self._call(request, messages_json, probe, started)
        actual = command.cost_usd if isinstance(command, RecordModelResponse) else 0.0
        await self.budget.settle(budget.org_id, budget.day, request.idempotency_key, actual)
        return BudgetedCall(verdict, command)

    def _probe(self, request: LlmCallRequested, messages_json: str) -> CacheProbe | None:
        if self.cache is None:
            return None
        # A pinned call must not be answered from the cache of its tier's (other) model.
        return probe_for(
            request.tier, request.tools, request.response_format_json, messages_json, request.pinned_model
        )

    async def _cached(
        self, request: LlmCallRequested, probe: CacheProbe | None, started: float
    ) -> RecordModelResponse | None:
        if self.cache is None or probe is None:
            return None
        found = await self.cache.lookup(probe)
        if found is None:
            LLM_CACHE_REQUESTS.labels(result="miss").inc()
            return None
        kind, answer = found
        try:
            parsed = _parse_completion(request.idempotency_key, answer.response_json, 0.0)
        except (ValueError, LookupError, TypeError):
            log.warning("unreadable prompt-cache entry for %s, calling a provider", request.idempotency_key)
            parsed = None
        if not isinstance(parsed, RecordModelResponse):
            # An entry that cannot answer the call sends it to a provider: a miss.
            LLM_CACHE_REQUESTS.labels(result="miss").inc()
            return None
        LLM_CACHE_REQUESTS.labels(result="hit").inc()
        return parsed.model_copy(
            update={
                "provider": answer.provider,
                "cache_kind": kind,
                "cost_usd": 0.0,
                "latency_ms": (time.perf_counter() - started) * 1000,
            }
        )

    async def _call(
        self,
        request: LlmCallRequested,
        messages_json: str,
        probe: CacheProbe | None,
        started: float,
        stream_task_id: str | None = None,
    ) -> ModelCommand:
        try:
            candidates = routes_for(self.providers, request.tier, request.pinned_model, self._available)
        except NoProviderForTier as exc:
            return self._failure(request, type(exc).__name__, str(exc), started)
        if not candidates:
            return self._failure(
                request,
                "AllProvidersUnavailable",
                f"every provider for {_route_name(request)} has an open circuit breaker: "
                f"{ {name: b.status.value for name, b in self.breakers.items()} }",
                started,
            )
        attempts = 0
        errors: list[str] = []
        last: BaseException | None = None
        for route in candidates:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.settings.attempts_per_provider),
                # Full backoff: initial * 2^n capped at max, plus up to `initial` of jitter so
                # processors that failed together do not retry together.
                wait=wait_exponential_jitter(
                    multiplier=self.settings.backoff_initial_seconds,
                    max=self.settings.backoff_max_seconds,
                    jitter=self.settings.backoff_initial_seconds,
                ),
                retry=retry_if_exception(is_retryable),
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        attempts += 1
                        response = await self._attempt(
                            request, messages_json, route, attempts, stream_task_id
                        )
            except _AttemptFailed as exc:  # the breaker refused this provider before any attempt
                attempts -= 1  # nothing was sent: attempts count requests
                errors.append(f"{route.provider.name}: {exc}")
                continue
            except (openai.OpenAIError, MalformedResponse) as exc:
                last = exc
                errors.append(f"{route.provider.name}: {type(exc).__name__}: {exc}")
                if not is_retryable(exc):
                    # The request itself is wrong: another provider would refuse it too.
                    return self._failure(request, type(exc).__name__, "; ".join(errors), started)
                continue
            return await self._answered(request, route, response, attempts, probe, started)
        error_type = type(last).__name__ if last is not None else "AllProvidersUnavailable"
        return self._failure(request, error_type, "all providers failed: " + "; ".join(errors), started)

    async def _attempt(
        self,
        request: LlmCallRequested,
        messages_json: str,
        route: Route,
        attempt: int,
        stream_task_id: str | None,
    ) -> RecordModelResponse | RecordModelFailure:
        name = route.provider.name
        allowed, self.breakers[name] = allow(self.breakers[name], self._clock(), self._policy)
        self._export_breaker(name)  # letting a probe through makes it half-open
        if not allowed:
            raise _AttemptFailed(f"circuit breaker {self.breakers[name].status.value}")
        sent = time.perf_counter()
        try:
            if stream_task_id is None:
                body = await self._post(request, messages_json, route)
            else:
                body = await self._post_streamed(request, messages_json, route, attempt, stream_task_id)
            try:
                parsed = _parse_completion(request.idempotency_key, body, (time.perf_counter() - sent) * 1000)
            except (ValueError, LookupError, TypeError) as exc:
                raise MalformedResponse(f"{type(exc).__name__}: {exc}; body starts {body[:200]!r}") from exc
        except (openai.OpenAIError, MalformedResponse) as exc:
            LLM_CALL_DURATION.labels(provider=name).observe(time.perf_counter() - sent)
            LLM_CALL_ERRORS.labels(provider=name, reason=type(exc).__name__).inc()
            # A 4xx other than 408/409/429 proves the provider is up and answering.
            self._record(name, succeeded=not is_retryable(exc))
            raise
        LLM_CALL_DURATION.labels(provider=name).observe(time.perf_counter() - sent)
        self._record(name, succeeded=True)
        return parsed

    def _available(self, name: str) -> bool:
        return available(self.breakers[name], self._clock(), self._policy)

    def _record(self, name: str, succeeded: bool) -> None:
        self.breakers[name] = record(self.breakers[name], succeeded, self._clock(), self._policy)
        self._export_breaker(name)

    def _export_breaker(self, name: str) -> None:
        CIRCUIT_BREAKER_STATE.labels(provider=name).set(
            BREAKER_STATE_VALUES[self.breakers[name].status.value]
        )

    async def _post(self, request: LlmCallRequested, messages_json: str, route: Route) -> str:
        """The conversation is already JSON (the decider keeps each message as JSON text), so the
        body is assembled from those bytes and posted through the SDK's client (auth, timeouts and
        error types stay the SDK's) without its per-call parameter transformation, which re-walks
        every message of the conversation and cost most of the processor's CPU
        (docs/benchmarks.md). The provider's response body is recorded verbatim."""
        return await self._clients[route.provider.name].post(
            "/chat/completions",
            cast_to=str,
            content=self._body(request, messages_json, route.model),
            options={"headers": {"Content-Type": JSON, "Idempotency-Key": request.idempotency_key}},
        )

    async def _post_streamed(
        self, request: LlmCallRequested, messages_json: str, route: Route, attempt: int, task_id: str
    ) -> str:
        """:meth:`_post` as a stream: each content delta is published as it arrives; the chunks are
        folded into the equivalent complete response body, which is what is recorded."""
        stream = await self._clients[route.provider.name].post(
            "/chat/completions",
            cast_to=dict[str, Any],
            content=self._body(request, messages_json, route.model, stream=True),
            options={"headers": {"Content-Type": JSON, "Idempotency-Key": request.idempotency_key}},
            stream=True,
            stream_cls=AsyncStream[dict[str, Any]],
        )
        chunks: list[dict[str, Any]] = []
        async for chunk in stream:
            chunks.append(chunk)
            for choice in chunk.get("choices") or ():
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    await self._tokens.publish(
                        task_id, {"step": request.step, "attempt": attempt, "delta": delta}
                    )
        await self._tokens.publish(task_id, {"step": request.step, "attempt": attempt, "done": True})
        try:
            return json.dumps(fold_chunks(chunks))
        except ValueError as exc:
            raise MalformedResponse(str(exc)) from exc

    async def _answered(
        self,
        request: LlmCallRequested,
        route: Route,
        parsed: RecordModelResponse | RecordModelFailure,
        attempts: int,
        probe: CacheProbe | None,
        started: float,
    ) -> ModelCommand:
        latency_ms = (time.perf_counter() - started) * 1000
        if isinstance(parsed, RecordModelFailure):
            return parsed.model_copy(update={"latency_ms": latency_ms})
        response = parsed.model_copy(
            update={
                "provider": route.provider.name,
                "model": parsed.model or route.model,
                "cost_usd": cost_usd(route.price, parsed.prompt_tokens, parsed.completion_tokens),
                "attempt": attempts,
                "latency_ms": latency_ms,
            }
        )
        if self.cache is not None and probe is not None:
            answer = CachedAnswer(
                provider=route.provider.name, model=response.model, response_json=response.response_json
            )
            await self.cache.store(probe, answer, has_tool_calls=bool(response.tool_calls))
        return response

    @staticmethod
    def _failure(
        request: LlmCallRequested, error_type: str, error: str, started: float
    ) -> RecordModelFailure:
        return RecordModelFailure(
            idempotency_key=request.idempotency_key,
            error_type=error_type,
            error=error,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def _body(self, request: LlmCallRequested, messages_json: str, model: str, stream: bool = False) -> bytes:
        tools = tuple(request.tools)
        if tools not in self._tool_specs:
            specs = [get_tool(name).openai_spec() for name in tools]
            self._tool_specs[tools] = f',"tools":{json.dumps(specs)}' if specs else ""
        response_format = (
            f',"response_format":{request.response_format_json}' if request.response_format_json else ""
        )
        streaming = ',"stream":true,"stream_options":{"include_usage":true}' if stream else ""
        return (
            f'{{"model":{json.dumps(model)},"messages":{messages_json}'
            f"{self._tool_specs[tools]}{response_format}{streaming}}}"
        ).encode()


def _parse_completion(idempotency_key: str, body: str, latency_ms: float) -> ModelCommand:
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


def _route_name(request: LlmCallRequested) -> str:
    return f"model {request.pinned_model}" if request.pinned_model else f"tier {request.tier.value}"
