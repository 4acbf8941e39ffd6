"""The LLM gateway against scripted OpenAI-compatible servers on loopback and the real Redis.

Each scripted server answers from a script (``ok``, ``500``, ``400``, ``slow``), one entry per
request, repeating the last; it counts requests, so "no request was made" is observed, not assumed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import uvicorn
from redis.asyncio import Redis

from processors.llm.breaker import BreakerStatus
from processors.llm.budget import BudgetLedger, BudgetLedgerUnavailable
from processors.llm.gateway import GatewaySettings, LlmGateway, OrgBudget
from processors.llm.providers import Providers
from processors.llm.streaming import channel
from processors.task.decider import RecordModelFailure, RecordModelResponse
from schemas.events import CacheKind, LlmCallRequested, ModelTier
from streams.settings import Settings

pytestmark = pytest.mark.integration

USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}


class ScriptedServer:
    """An OpenAI-compatible chat-completions endpoint that follows a script, in its own thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.script: list[str] = ["ok"]
        self.requests: list[dict[str, Any]] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            lifespan="off",
            loop="asyncio",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"scripted server {self.name} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def reset(self, *script: str) -> None:
        self.script = list(script)
        self.requests.clear()

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        chunks = []
        while True:
            event = await receive()
            chunks.append(event.get("body", b""))
            if not event.get("more_body"):
                break
        request = json.loads(b"".join(chunks))
        step = self.script[min(len(self.requests), len(self.script) - 1)]
        self.requests.append(request)
        if step == "slow":
            await asyncio.sleep(2)
        if step not in ("500", "400") and request.get("stream"):
            await self._stream(request, send)
            return
        status, payload = {
            "500": (500, {"error": {"message": "scripted outage", "type": "server_error"}}),
            "400": (400, {"error": {"message": "scripted bad request", "type": "invalid_request_error"}}),
        }.get(step, (200, self._completion(request)))
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, request: dict[str, Any], send: Any) -> None:
        """The answer as server-sent ``chat.completion.chunk`` events, usage in the last one."""
        text = self._completion(request)["choices"][0]["message"]["content"]
        words = text.split(" ")
        base = {
            "id": "chatcmpl-stream",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": request["model"],
        }
        chunks = [
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
            },
            *(
                {
                    **base,
                    "choices": [
                        {"index": 0, "delta": {"content": w if i == 0 else " " + w}, "finish_reason": None}
                    ],
                }
                for i, w in enumerate(words)
            ),
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**base, "choices": [], "usage": USAGE},
        ]
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in chunks:
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    def _completion(self, request: dict[str, Any]) -> dict[str, Any]:
        user = [m["content"] for m in request["messages"] if m["role"] == "user"][-1]
        return {
            "id": f"chatcmpl-{self.name}-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": request["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"{self.name} answers {user!r}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ScriptedServer, ScriptedServer]]:
    flaky, healthy = ScriptedServer("flaky"), ScriptedServer("healthy")
    flaky.start()
    healthy.start()
    yield flaky, healthy
    flaky.stop()
    healthy.stop()


def _providers(flaky: ScriptedServer, healthy: ScriptedServer) -> Providers:
    def entry(server: ScriptedServer, priority: int, price: float) -> dict[str, Any]:
        model = f"{server.name}-medium"
        return {
            "name": server.name,
            "base_url": server.base_url,
            "priority": priority,
            "timeout_seconds": 0.5,
            "models": {"MEDIUM": model},
            "prices": {model: {"prompt_per_1k": price, "completion_per_1k": 2 * price}},
        }

    return Providers.model_validate({"providers": [entry(healthy, 1, 0.01), entry(flaky, 0, 0.001)]})


class FakeClock:
    """The breaker's clock, moved by the test (the cool-down passes without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _gateway(
    stack: Settings,
    servers: tuple[ScriptedServer, ScriptedServer],
    clock: FakeClock | None = None,
    **overrides: Any,
) -> LlmGateway:
    knobs: dict[str, Any] = {
        "attempts_per_provider": 2,
        "backoff_initial_seconds": 0.01,
        "backoff_max_seconds": 0.02,
        "breaker_min_calls": 2,
        "breaker_failure_ratio": 0.5,
        "breaker_cooldown_seconds": 30,
        **overrides,
    }
    return LlmGateway(
        stack,
        gateway_settings=GatewaySettings(**knobs),
        providers=_providers(*servers),
        clock=clock or FakeClock(),
    )


def _request(query: str, system: str = "You are terse.") -> tuple[LlmCallRequested, str]:
    messages = json.dumps([{"role": "system", "content": system}, {"role": "user", "content": query}])
    request = LlmCallRequested(
        step=1,
        idempotency_key=f"task-{uuid.uuid4().hex}:1",
        provider="flaky",
        model="flaky-medium",
        tier=ModelTier.MEDIUM,
        messages_json=messages,
    )
    return request, messages


def _unique(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


async def test_a_failing_provider_is_retried_then_the_next_one_answers(stack: Settings, servers: Any) -> None:
    flaky, healthy = servers
    flaky.reset("500")
    healthy.reset("ok")
    gateway = _gateway(stack, servers, cache_enabled=False)
    try:
        command = await gateway.complete(*_request(_unique("What is the boiling point of water?")))
    finally:
        await gateway.close()
    assert isinstance(command, RecordModelResponse), command
    assert (command.provider, command.model, command.attempt) == ("healthy", "healthy-medium", 3)
    assert len(flaky.requests) == 2 and len(healthy.requests) == 1
    assert command.cost_usd == pytest.approx(1000 / 1000 * 0.01 + 500 / 1000 * 0.02)
    assert (command.prompt_tokens, command.completion_tokens, command.cache_kind) == (1000, 500, None)
    assert command.latency_ms > 0


async def test_a_timeout_falls_back_too(stack: Settings, servers: Any) -> None:
    flaky, healthy = servers
    flaky.reset("slow")
    healthy.reset("ok")
    gateway = _gateway(stack, servers, cache_enabled=False, attempts_per_provider=1)
    try:
        command = await gateway.complete(*_request(_unique("Name a prime number.")))
    finally:
        await gateway.close()
    assert isinstance(command, RecordModelResponse), command
    assert (command.provider, command.attempt) == ("healthy", 2)
    assert len(flaky.requests) == 1


async def test_a_bad_request_does_not_fall_back(stack: Settings, servers: Any) -> None:
    flaky, healthy = servers
    flaky.reset("400")
    healthy.reset("ok")
    gateway = _gateway(stack, servers, cache_enabled=False)
    try:
        command = await gateway.complete(*_request(_unique("Malformed on purpose")))
    finally:
        await gateway.close()
    assert isinstance(command, RecordModelFailure)
    assert command.error_type == "BadRequestError" and "scripted bad request" in command.error
    assert (len(flaky.requests), len(healthy.requests)) == (1, 0)


async def test_every_provider_failing_is_a_failure_command_naming_each(stack: Settings, servers: Any) -> None:
    flaky, healthy = servers
    flaky.reset("500")
    healthy.reset("500")
    gateway = _gateway(stack, servers, cache_enabled=False)
    try:
        command = await gateway.complete(*_request(_unique("Anyone there?")))
    finally:
        await gateway.close()
    assert isinstance(command, RecordModelFailure)
    assert command.error_type == "InternalServerError"
    assert "flaky:" in command.error and "healthy:" in command.error
    assert (len(flaky.requests), len(healthy.requests)) == (2, 2)


async def test_the_breaker_opens_skips_the_provider_and_probes_after_the_cooldown(
    stack: Settings, servers: Any
) -> None:
    flaky, healthy = servers
    flaky.reset("500")
    healthy.reset("ok")
    clock = FakeClock()
    gateway = _gateway(stack, servers, clock, cache_enabled=False)
    try:
        first = await gateway.complete(*_request(_unique("one")))
        assert isinstance(first, RecordModelResponse) and first.provider == "healthy"
        assert gateway.breakers["flaky"].status is BreakerStatus.OPEN
        assert len(flaky.requests) == 2

        # Open: the flaky provider is not even tried.
        second = await gateway.complete(*_request(_unique("two")))
        assert isinstance(second, RecordModelResponse)
        assert (second.provider, second.attempt) == ("healthy", 1)
        assert len(flaky.requests) == 2

        # After the cool-down one probe goes through; it fails, so the breaker re-opens.
        clock.now += 30
        third = await gateway.complete(*_request(_unique("three")))
        assert isinstance(third, RecordModelResponse) and third.provider == "healthy"
        assert len(flaky.requests) == 3
        assert gateway.breakers["flaky"].status is BreakerStatus.OPEN

        # The provider recovers: the next probe succeeds and the breaker closes.
        flaky.reset("ok")
        clock.now += 30
        fourth = await gateway.complete(*_request(_unique("four")))
        assert isinstance(fourth, RecordModelResponse)
        assert (fourth.provider, fourth.attempt) == ("flaky", 1)
        assert gateway.breakers["flaky"].status is BreakerStatus.CLOSED
        assert fourth.cost_usd == pytest.approx(1000 / 1000 * 0.001 + 500 / 1000 * 0.002)
    finally:
        await gateway.close()


async def test_an_identical_call_is_an_exact_cache_hit_with_no_request(stack: Settings, servers: Any) -> None:
    flaky, healthy = servers
    flaky.reset("ok")
    healthy.reset("ok")
    gateway = _gateway(stack, servers)
    query = _unique("What is the tallest mountain?")
    try:
        first = await gateway.complete(*_request(query))
        second = await gateway.complete(*_request(query))
    finally:
        await gateway.close()
    assert isinstance(first, RecordModelResponse) and isinstance(second, RecordModelResponse)
    assert first.cache_kind is None and first.cost_usd > 0
    assert second.cache_kind is CacheKind.EXACT
    assert (second.cost_usd, second.provider) == (0.0, "flaky")
    assert second.content == first.content and second.response_json == first.response_json
    assert len(flaky.requests) == 1 and len(healthy.requests) == 0


async def test_a_paraphrase_is_a_semantic_hit_and_an_unrelated_prompt_is_not(
    stack: Settings, servers: Any
) -> None:
    flaky, healthy = servers
    flaky.reset("ok")
    healthy.reset("ok")
    gateway = _gateway(stack, servers)
    system = _unique("You are a historian.")  # a fresh semantic scope for this run
    try:
        first = await gateway.complete(*_request("Summarize the history of Rome", system))
        paraphrase = await gateway.complete(*_request("Summarise the history of Rome", system))
        unrelated = await gateway.complete(*_request("Write a poem about the sea", system))
    finally:
        await gateway.close()
    assert isinstance(first, RecordModelResponse) and first.cache_kind is None
    assert isinstance(paraphrase, RecordModelResponse)
    assert (paraphrase.cache_kind, paraphrase.cost_usd) == (CacheKind.SEMANTIC, 0.0)
    assert paraphrase.content == first.content
    assert isinstance(unrelated, RecordModelResponse) and unrelated.cache_kind is None
    assert len(flaky.requests) == 2


async def test_redis_down_means_cache_misses_not_errors(stack: Settings, servers: Any) -> None:
    flaky, healthy = servers
    flaky.reset("ok")
    healthy.reset("ok")
    with socket.socket() as probe:  # a port nothing listens on: Redis "down", for real
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    settings = stack.model_copy(update={"redis_url": f"redis://127.0.0.1:{dead}/0"})
    gateway = _gateway(settings, servers)
    query = _unique("Is the cache up?")
    try:
        first = await gateway.complete(*_request(query))
        second = await gateway.complete(*_request(query))
    finally:
        await gateway.close()
    assert isinstance(first, RecordModelResponse) and isinstance(second, RecordModelResponse)
    assert first.cache_kind is None and second.cache_kind is None
    assert len(flaky.requests) == 2


async def test_a_call_over_the_daily_budget_is_not_made(stack: Settings, servers: Any) -> None:
    flaky, healthy = servers
    flaky.reset("ok")
    healthy.reset("ok")
    gateway = _gateway(stack, servers, cache_enabled=False, budget_completion_tokens=500)
    org, day = f"org-{uuid.uuid4().hex[:8]}", date(2026, 11, 22)
    request, messages = _request(_unique("Budgeted question"))
    # The estimate at the first provider's price: ceil(chars / 4) prompt tokens + 500 completion tokens.
    estimate = -(-len(messages) // 4) / 1000 * 0.001 + 500 / 1000 * 0.002
    budget = OrgBudget(org_id=org, day=day, limit_usd=estimate * 1.1)
    try:
        allowed = await gateway.complete_within_budget(request, messages, budget)
        refused = await gateway.complete_within_budget(*_request(_unique("One more")), budget)
        spent = await BudgetLedger(gateway._redis).spent(org, day)
    finally:
        await gateway.close()
    assert allowed.verdict is not None and allowed.verdict.allowed and allowed.verdict.crossed_80_percent
    assert isinstance(allowed.command, RecordModelResponse)
    # Settled at the actual cost (the server reports 1000 + 500 tokens), not the estimate.
    assert spent == pytest.approx(allowed.command.cost_usd, abs=1e-6)
    assert refused.command is None and refused.verdict is not None and refused.verdict.exceeded
    assert "would be exceeded" in refused.verdict.reason and org in refused.verdict.reason
    assert len(flaky.requests) == 1


async def test_concurrent_reservations_never_overspend_and_alert_once(stack: Settings) -> None:
    redis = Redis.from_url(stack.redis_url)
    ledger = BudgetLedger(redis)
    org, day = f"org-{uuid.uuid4().hex[:8]}", date(2026, 11, 22)
    try:
        verdicts = await asyncio.gather(*(ledger.reserve(org, day, f"call-{i}", 0.1, 1.0) for i in range(30)))
        # Which ten win the race is up to the scheduler; redeliver one that won and one that lost.
        won = next(f"call-{i}" for i, v in enumerate(verdicts) if v.allowed)
        lost = next(f"call-{i}" for i, v in enumerate(verdicts) if not v.allowed)
        again = await ledger.reserve(org, day, won, 0.1, 1.0)
        refused_again = await ledger.reserve(org, day, lost, 0.1, 1.0)
        spent = await ledger.spent(org, day)
        settled = await ledger.settle(org, day, won, 0.05)
    finally:
        await redis.aclose()
    assert sum(v.allowed for v in verdicts) == 10
    assert sum(v.crossed_80_percent for v in verdicts) == 1
    assert spent == pytest.approx(1.0)
    assert again.allowed and again.used_after_usd == pytest.approx(1.0)  # not counted twice
    assert not refused_again.allowed and refused_again.used_after_usd == pytest.approx(1.0)
    assert settled == pytest.approx(0.95)


async def test_the_ledger_fails_closed_when_redis_is_down() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    redis = Redis.from_url(f"redis://127.0.0.1:{dead}/0", socket_connect_timeout=0.5)
    try:
        with pytest.raises(BudgetLedgerUnavailable, match="'acme'"):
            await BudgetLedger(redis).reserve("acme", date(2026, 11, 22), "k", 0.1, 1.0)
    finally:
        await redis.aclose()


async def test_a_streamed_answer_is_published_token_by_token_and_recorded_whole(
    stack: Settings, servers: Any
) -> None:
    flaky, healthy = servers
    flaky.reset("ok")
    healthy.reset("ok")
    gateway = _gateway(stack, servers, cache_enabled=False)
    task_id = f"task-{uuid.uuid4().hex}"
    listener = Redis.from_url(stack.redis_url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(channel(task_id))
    try:
        command = await gateway.complete(*_request(_unique("Stream me")), stream_task_id=task_id)
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        while not messages or not messages[-1].get("done"):
            assert time.monotonic() < deadline, f"no end of stream after {messages}"
            # None: the subscription's own confirmation, or nothing yet.
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                messages.append(json.loads(message["data"]))
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await gateway.close()
    assert isinstance(command, RecordModelResponse), command
    assert flaky.requests[0]["stream"] is True
    deltas = [m["delta"] for m in messages if "delta" in m]
    assert len(deltas) > 3 and "".join(deltas) == command.content
    assert {(m["step"], m["attempt"]) for m in messages} == {(1, 1)}
    assert (command.prompt_tokens, command.completion_tokens, command.finish_reason) == (1000, 500, "stop")
    recorded = json.loads(command.response_json)
    assert (
        recorded["object"] == "chat.completion"
        and recorded["choices"][0]["message"]["content"] == command.content
    )


async def test_a_tier_no_provider_serves_is_a_failure_command(stack: Settings, servers: Any) -> None:
    gateway = _gateway(stack, servers, cache_enabled=False)
    request, messages = _request(_unique("Large question"))
    try:
        command = await gateway.complete(request.model_copy(update={"tier": ModelTier.LARGE}), messages)
    finally:
        await gateway.close()
    assert isinstance(command, RecordModelFailure)
    assert command.error_type == "NoProviderForTier" and "LARGE" in command.error
