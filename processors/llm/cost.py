"""What a model call costs, from the providers file's prices (pure)."""

from __future__ import annotations

from processors.llm.providers import ModelPrice

# A rough characters-per-token ratio for estimating a prompt before it is sent (budget reservations);
# the settled cost always uses the provider's reported usage.
CHARS_PER_TOKEN = 4


def cost_usd(price: ModelPrice, prompt_tokens: int, completion_tokens: int) -> float:
    """The USD cost of a call that used these tokens."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got {prompt_tokens=} {completion_tokens=}")
    return prompt_tokens / 1000 * price.prompt_per_1k + completion_tokens / 1000 * price.completion_per_1k


def estimate_usd(price: ModelPrice, prompt_chars: int, max_completion_tokens: int) -> float:
    """An upper-leaning estimate of a call's cost before it is made (for budget reservations)."""
    prompt_tokens = -(-prompt_chars // CHARS_PER_TOKEN)
    return cost_usd(price, prompt_tokens, max_completion_tokens)
