"""What a model call costs, when the provider does not say.

OpenRouter reports each call's cost in `usage.cost`; this table prices the tokens
otherwise, and gives the upper bound reserved against a user's budget before a call.
Prices are USD per million tokens, as published by the providers (cached prompt tokens are
billed at their own rate; reasoning tokens are part of the completion tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.ai.chat import TokenUsage


@dataclass(frozen=True)
class Price:
    prompt: float
    completion: float
    cached_prompt: float


PRICES: dict[str, Price] = {
    "openai/gpt-4o-mini": Price(prompt=0.15, completion=0.60, cached_prompt=0.075),
    "openai/gpt-4o": Price(prompt=2.50, completion=10.00, cached_prompt=1.25),
    "anthropic/claude-3.5-haiku": Price(prompt=0.80, completion=4.00, cached_prompt=0.08),
    "anthropic/claude-3.5-sonnet": Price(prompt=3.00, completion=15.00, cached_prompt=0.30),
    "google/gemini-flash-1.5": Price(prompt=0.075, completion=0.30, cached_prompt=0.01875),
    "meta-llama/llama-3.1-70b-instruct": Price(prompt=0.12, completion=0.30, cached_prompt=0.12),
}
# A model missing from the table is priced high rather than free: budgets stay budgets.
UNKNOWN_MODEL = Price(prompt=5.00, completion=15.00, cached_prompt=5.00)
PER_TOKEN = 1_000_000
# Characters per token is about 4 for English; 3 keeps the estimate above the real count.
CHARS_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 8


def price_of(model: str) -> Price:
    return PRICES.get(model, UNKNOWN_MODEL)


def cost_of(model: str, usage: TokenUsage) -> float:
    """Price the tokens of one call with the table."""
    price = price_of(model)
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    fresh = usage.prompt_tokens - cached
    total = fresh * price.prompt + cached * price.cached_prompt + usage.completion_tokens * price.completion
    return total / PER_TOKEN


def estimate_prompt_tokens(texts: list[str]) -> int:
    """An over-estimate of the prompt tokens of these messages."""
    return sum(len(text) // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE for text in texts)


def most_expensive(models: tuple[str, ...], prompt_tokens: int, max_tokens: int) -> float:
    """The highest cost a call can have when any of `models` answers (nothing cached)."""
    usage = TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=max_tokens)
    return max(cost_of(model, usage) for model in models)
