"""Prices to costs, and the order in which providers are tried (pure)."""

from __future__ import annotations

import httpx2
import openai
import pytest

from processors.llm.cache import probe_for
from processors.llm.cost import cost_usd, estimate_usd
from processors.llm.providers import ModelPrice, Providers
from processors.llm.routing import (
    MalformedResponse,
    NoProviderForModel,
    NoProviderForTier,
    is_retryable,
    routes,
    routes_for,
)
from schemas.events import ModelTier

PRICE = ModelPrice(prompt_per_1k=0.5, completion_per_1k=1.5)
FREE = {"prompt_per_1k": 0, "completion_per_1k": 0}
PROVIDERS = Providers.model_validate(
    {
        "providers": [
            {
                "name": "late",
                "base_url": "http://a/v1",
                "priority": 5,
                "models": {"SMALL": "a"},
                "prices": {"a": FREE},
            },
            {
                "name": "first",
                "base_url": "http://b/v1",
                "priority": 0,
                "models": {"SMALL": "b", "LARGE": "bl"},
                "prices": {"b": FREE, "bl": FREE},
            },
            {
                "name": "middle",
                "base_url": "http://c/v1",
                "priority": 2,
                "models": {"SMALL": "c"},
                "prices": {"c": FREE, "pin-only": FREE},
            },
        ]
    }
)


def test_cost_is_tokens_times_price_per_1k() -> None:
    assert cost_usd(PRICE, 2000, 1000) == pytest.approx(2.5)
    assert cost_usd(PRICE, 0, 0) == 0
    with pytest.raises(ValueError, match="-1"):
        cost_usd(PRICE, -1, 0)


def test_an_estimate_counts_prompt_characters_as_tokens_rounded_up() -> None:
    assert estimate_usd(PRICE, 4001, 1000) == pytest.approx(1001 / 1000 * 0.5 + 1.5)


def test_routes_follow_priority_and_skip_unavailable_providers() -> None:
    assert [(r.provider.name, r.model) for r in routes(PROVIDERS, ModelTier.SMALL, lambda _: True)] == [
        ("first", "b"),
        ("middle", "c"),
        ("late", "a"),
    ]
    assert [r.provider.name for r in routes(PROVIDERS, ModelTier.SMALL, lambda n: n != "first")] == [
        "middle",
        "late",
    ]
    assert [r.model for r in routes(PROVIDERS, ModelTier.LARGE, lambda _: True)] == ["bl"]


def test_a_tier_nobody_serves_is_an_error_naming_the_tier() -> None:
    with pytest.raises(NoProviderForTier, match="MEDIUM"):
        routes(PROVIDERS, ModelTier.MEDIUM, lambda _: True)


def test_a_pinned_model_routes_to_the_providers_that_price_it_whatever_the_tier() -> None:
    assert [
        (r.provider.name, r.model) for r in routes_for(PROVIDERS, ModelTier.SMALL, "bl", lambda _: True)
    ] == [("first", "bl")]
    # priced but on no tier: offered for pinning only
    assert [r.provider.name for r in routes_for(PROVIDERS, ModelTier.LARGE, "pin-only", lambda _: True)] == [
        "middle"
    ]
    assert routes_for(PROVIDERS, ModelTier.SMALL, "pin-only", lambda n: n != "middle") == []
    # unpinned: by tier, as before
    assert [r.model for r in routes_for(PROVIDERS, ModelTier.LARGE, None, lambda _: True)] == ["bl"]
    with pytest.raises(NoProviderForModel, match="nobody-serves-this"):
        routes_for(PROVIDERS, ModelTier.SMALL, "nobody-serves-this", lambda _: True)


def test_a_pinned_model_is_part_of_the_cache_keys_and_unpinned_keys_are_unchanged() -> None:
    messages = '[{"role": "user", "content": "What is 6 * 7?"}]'
    plain = probe_for(ModelTier.SMALL, [], None, messages)
    assert probe_for(ModelTier.SMALL, [], None, messages, None) == plain
    pinned = probe_for(ModelTier.SMALL, [], None, messages, "bl")
    assert pinned.exact_key != plain.exact_key and pinned.semantic_scope != plain.semantic_scope


def _status(code: int) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    return openai.APIStatusError("e", response=httpx2.Response(code, request=request), body=None)


@pytest.mark.parametrize(
    ("code", "retry"),
    [
        (500, True),
        (503, True),
        (429, True),
        (408, True),
        (400, False),
        (401, False),
        (404, False),
        (422, False),
    ],
)
def test_status_codes_are_classified(code: int, retry: bool) -> None:
    assert is_retryable(_status(code)) is retry


def test_timeouts_connection_errors_and_malformed_answers_are_retryable() -> None:
    request = httpx2.Request("POST", "http://x")
    assert is_retryable(openai.APITimeoutError(request=request))
    assert is_retryable(openai.APIConnectionError(request=request))
    assert is_retryable(MalformedResponse("x"))
    assert not is_retryable(ValueError("x"))
