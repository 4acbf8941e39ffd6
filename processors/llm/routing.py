"""Which providers a call may go to, in which order, and which errors are worth another attempt (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import openai

from processors.llm.providers import ModelPrice, ProviderConfig, Providers
from schemas.events import ModelTier


class NoProviderForTier(LookupError):
    """No configured provider serves the requested tier."""


@dataclass(frozen=True)
class Route:
    provider: ProviderConfig
    model: str

    @property
    def price(self) -> ModelPrice:
        return self.provider.prices[self.model]


def routes(providers: Providers, tier: ModelTier, available: Callable[[str], bool]) -> list[Route]:
    """The providers serving ``tier`` ordered by priority (then file order), those not ``available``
    (an open circuit breaker) left out."""
    serving = [p for p in providers.providers if tier in p.models]
    if not serving:
        raise NoProviderForTier(
            f"no provider serves tier {tier.value}; configured: "
            f"{ {p.name: sorted(t.value for t in p.models) for p in providers.providers} }"
        )
    ordered = sorted(serving, key=lambda p: p.priority)
    return [Route(p, p.models[tier]) for p in ordered if available(p.name)]


class MalformedResponse(ValueError):
    """The provider answered 2xx with a body that is not a chat completion."""


def is_retryable(exc: BaseException) -> bool:
    """Worth another attempt (here or at the next provider): timeouts, connection errors, 408, 409,
    429, 5xx and malformed answers. Other 4xx mean the request itself is wrong: no provider would
    take it, so it neither retries nor falls back."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    # The SDK wraps transport errors (timeouts included) in APIConnectionError.
    return isinstance(exc, openai.APIConnectionError | MalformedResponse)


class NoProviderForModel(NoProviderForTier):
    """No configured provider serves the pinned model."""


def routes_for_model(providers: Providers, model: str, available: Callable[[str], bool]) -> list[Route]:
    """The providers serving ``model`` ordered by priority, for a call whose model is pinned; those
    not ``available`` left out. A provider serves the models it has a price for: its tiers' models
    and any other it lists under ``prices`` (so a model can be offered for pinning only)."""
    serving = [p for p in providers.providers if model in p.prices]
    if not serving:
        raise NoProviderForModel(
            f"no provider serves model {model!r}; configured: "
            f"{ {p.name: sorted(p.prices) for p in providers.providers} }"
        )
    ordered = sorted(serving, key=lambda p: p.priority)
    return [Route(p, model) for p in ordered if available(p.name)]


def routes_for(
    providers: Providers, tier: ModelTier, pinned_model: str | None, available: Callable[[str], bool]
) -> list[Route]:
    """The routes of a call: by its pinned model when it has one, else by its tier."""
    if pinned_model:
        return routes_for_model(providers, pinned_model, available)
    return routes(providers, tier, available)
