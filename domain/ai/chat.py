"""The chat-completions contract between the AI gateway and a model provider.

A provider takes one `ChatRequest` (messages and the models to try, in order) and returns
one `ChatResponse` (the text and what it cost), or raises:

- `ModelUnavailable` (a TransientFault): no model could answer now (timeouts, 429, 5xx,
  every breaker open); the operation is retried later.
- `ModelRefused` (a PermanentFault): the provider refused the request for good (4xx other
  than 408/429: bad key, unknown model, request too large); retrying cannot help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from domain.core.errors import PermanentFault, TransientFault


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """One completion to obtain; `models` are tried in order (the first is preferred)."""

    messages: tuple[Message, ...]
    models: tuple[str, ...]
    max_tokens: int = 1024
    temperature: float = 0.0
    # Ask for a JSON object (OpenAI-style `response_format: {"type": "json_object"}`).
    json_output: bool = True


@dataclass(frozen=True)
class TokenUsage:
    """Token counts as the provider reported them (0 when not reported)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class ChatResponse:
    """The answer of the model that answered, with its usage.

    `cost_usd` is the provider's own figure when it reports one (OpenRouter's
    `usage.cost`), else None and the gateway prices the tokens from its price table.
    `attempts` counts the HTTP requests it took (retries and fallbacks included).
    """

    content: str
    model: str
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float | None = None
    provider_id: str | None = None
    attempts: int = 1


class ModelUnavailable(TransientFault):
    """No model answered this time (timeouts, rate limits, server errors, open breakers)."""


class ModelRefused(PermanentFault):
    """The provider refused the request; sending it again cannot succeed."""


class ChatProvider(Protocol):
    """Something that turns a chat request into one model's answer."""

    name: str

    def complete(self, request: ChatRequest) -> ChatResponse: ...
