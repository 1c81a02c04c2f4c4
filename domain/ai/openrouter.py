"""The OpenRouter chat-completions client: retries, fallbacks and a breaker per model.

For each model of the request, in order, while its breaker allows it, the client makes up
to `ai_attempts_per_model` HTTP requests; timeouts, connection errors, 408, 429 and 5xx are
retried after the server's `Retry-After` (when sane) or an exponential backoff with full
jitter, and then the next model is tried. OpenRouter is also given the later models whose
breakers are closed as its own `models` fallback list, so it can switch without a round
trip. Any other 4xx is final. Neither the API key nor the prompt is ever logged.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from itertools import groupby
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from domain.ai.breaker import CircuitBreaker
from domain.ai.chat import ChatRequest, ChatResponse, ModelRefused, ModelUnavailable, TokenUsage
from domain.core.config import Settings, SettingsError

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0
# A Retry-After longer than this is not waited for: the next model is tried instead.
RETRY_AFTER_CAP_SECONDS = 30.0
CONNECT_TIMEOUT_CAP_SECONDS = 5.0
# Keep-alive connections kept per host: enough for a worker's concurrent AI calls.
POOL_SIZE = 64
TITLE = "DeepRef"
RETRYABLE_STATUSES = frozenset({408, 429})


@dataclass
class _Attempt:
    """What one HTTP request gave: an answer, or why not (and what that says of the model)."""

    response: ChatResponse | None = None
    failure: str = ""
    model_at_fault: bool = False
    retry_after: float | None = None


@dataclass
class _Tally:
    """The HTTP requests made for one completion and what happened to each model."""

    attempts: int = 0
    outcomes: list[str] = field(default_factory=list)

    def note(self, model: str, failures: list[str]) -> None:
        self.outcomes.append(f"{model}: {', '.join(_runs(failures))}")


class OpenRouterClient:
    """A `ChatProvider` that asks OpenRouter (see the module docstring)."""

    name = "openrouter"

    def __init__(
        self,
        settings: Settings,
        breaker: CircuitBreaker,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """Prepare a client for OpenRouter; raises SettingsError when no API key is configured."""
        if not settings.openrouter_api_key:
            raise SettingsError("OPENROUTER_API_KEY is not set")
        self._settings = settings
        self._key = settings.openrouter_api_key
        self._breaker = breaker
        self._session = session or _pooled_session()
        self._sleep = sleep
        self._jitter = jitter
        self._url = settings.openrouter_base_url.rstrip("/") + "/chat/completions"
        timeout = settings.ai_timeout_seconds
        self._timeout = (min(CONNECT_TIMEOUT_CAP_SECONDS, timeout), timeout)

    def complete(self, request: ChatRequest) -> ChatResponse:
        """Return the answer of the first model of `request.models` that gives one.

        Raises ModelRefused when OpenRouter refuses the request for good (a 4xx other than
        408/429, or no model named), ModelUnavailable when no model answered (the message
        says what happened to each).
        """
        if not request.models:
            raise ModelRefused("no model named in the chat request")
        tally = _Tally()
        for index in range(len(request.models)):
            response = self._ask_model(request, index, tally)
            if response is not None:
                return response
        raise ModelUnavailable("no model answered: " + "; ".join(tally.outcomes))

    def _ask_model(self, request: ChatRequest, index: int, tally: _Tally) -> ChatResponse | None:
        """Try `request.models[index]` until it answers, runs out of attempts or is shut."""
        model = request.models[index]
        failures: list[str] = []
        for attempt in range(self._settings.ai_attempts_per_model):
            if not self._breaker.allow(model):
                failures.append("breaker open")
                break
            fallbacks = [m for m in request.models[index + 1 :] if self._breaker.state(m) == "closed"]
            outcome = self._post(request, model, fallbacks)
            tally.attempts += 1
            if outcome.response is not None:
                return replace(outcome.response, attempts=tally.attempts)
            self._record_failure(model, attempt, outcome)
            failures.append(outcome.failure)
            if attempt + 1 < self._settings.ai_attempts_per_model and not self._wait(attempt, outcome, failures):
                break
        tally.note(model, failures)
        return None

    def _post(self, request: ChatRequest, model: str, fallbacks: list[str]) -> _Attempt:
        """Make one HTTP request; raise ModelRefused on a final refusal."""
        try:
            reply = self._session.post(
                self._url,
                json=_body(request, model, fallbacks),
                headers=self._headers(),
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            return _Attempt(failure="timeout", model_at_fault=True)
        except requests.RequestException as exc:
            return _Attempt(failure=type(exc).__name__, model_at_fault=True)
        if reply.status_code == 200:
            return self._answered(model, fallbacks, reply)
        failure = f"HTTP {reply.status_code}"
        if 400 <= reply.status_code < 500 and reply.status_code not in RETRYABLE_STATUSES:
            raise ModelRefused(f"OpenRouter refused the request for {model}: {failure}{self._reason(reply)}")
        at_fault = reply.status_code >= 500 or reply.status_code == 408
        return _Attempt(failure=failure, model_at_fault=at_fault, retry_after=_retry_after(reply))

    def _answered(self, model: str, fallbacks: list[str], reply: requests.Response) -> _Attempt:
        """Turn a 200 into an answer, or into a failure when its body is unusable."""
        try:
            body = reply.json()
        except ValueError:
            return _Attempt(failure="body not JSON", model_at_fault=True)
        error = _error_in(body)
        if error is not None:
            return _Attempt(failure=error, model_at_fault=True)
        response = _parse_answer(body, model)
        if response is None:
            return _Attempt(failure="no usable answer")
        # OpenRouter may name a dated variant of the model; the breaker is kept per name asked.
        self._breaker.succeeded(response.model if response.model in (model, *fallbacks) else model)
        return _Attempt(response=response)

    def _record_failure(self, model: str, attempt: int, outcome: _Attempt) -> None:
        logger.warning(
            "OpenRouter attempt %d for %s failed: %s",
            attempt + 1,
            model,
            outcome.failure,
            extra={"model": model, "attempt": attempt + 1, "failure": outcome.failure},
        )
        if outcome.model_at_fault:
            self._breaker.failed(model)

    def _wait(self, attempt: int, outcome: _Attempt, failures: list[str]) -> bool:
        """Sleep before the next attempt on the same model; False when it is not worth waiting."""
        delay = outcome.retry_after
        if delay is None:
            delay = self._jitter() * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
        elif delay > RETRY_AFTER_CAP_SECONDS:
            failures.append(f"Retry-After {delay:.0f} s")
            return False
        self._sleep(delay)
        return True

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._key}",
            "HTTP-Referer": self._settings.public_base_url,
            "X-Title": TITLE,
        }

    def _reason(self, reply: requests.Response) -> str:
        """The provider's `error.message`, shortened and without the API key, as a suffix."""
        try:
            error = reply.json().get("error")
            message = str(error.get("message") or "") if isinstance(error, dict) else ""
        except (ValueError, AttributeError):
            message = ""
        message = message.replace(self._key, "[key]")[:200]
        return f" ({message})" if message else ""


def _pooled_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _body(request: ChatRequest, model: str, fallbacks: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        # Deprecated by OpenRouter (usage and cost are now always reported), harmless.
        "usage": {"include": True},
    }
    if fallbacks:
        body["models"] = fallbacks
    if request.json_output:
        body["response_format"] = {"type": "json_object"}
    return body


def _retry_after(reply: requests.Response) -> float | None:
    """Seconds the `Retry-After` header asks to wait (a number or an HTTP date), or None."""
    value = reply.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_in(body: Any) -> str | None:
    """Why a 200 body is a failure (not an object, or an `error` object in it), or None."""
    if not isinstance(body, dict):
        return "body not an object"
    error = body.get("error")
    if error is None:
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return f"error {code} in body" if code is not None else "error in body"


def _parse_answer(body: dict[str, Any], model: str) -> ChatResponse | None:
    """The answer in a 200 body, or None when it has no message content.

    The content is returned as the model wrote it, JSON or not: it was paid for, and
    judging it (and asking for a repair) is the caller's business.
    """
    content = _content(body)
    if content is None:
        return None
    usage = body.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    answered = body.get("model")
    provider_id = body.get("id")
    return ChatResponse(
        content=content,
        model=answered if isinstance(answered, str) and answered else model,
        usage=TokenUsage(
            prompt_tokens=_count(usage, "prompt_tokens"),
            completion_tokens=_count(usage, "completion_tokens"),
            cached_tokens=_count(usage.get("prompt_tokens_details"), "cached_tokens"),
            reasoning_tokens=_count(usage.get("completion_tokens_details"), "reasoning_tokens"),
        ),
        cost_usd=_cost(usage.get("cost")),
        provider_id=provider_id if isinstance(provider_id, str) else None,
    )


def _content(body: dict[str, Any]) -> str | None:
    choices = body.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def _count(details: Any, name: str) -> int:
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _cost(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _runs(failures: list[str]) -> list[str]:
    """Collapse repeats: ["HTTP 500", "HTTP 500", "timeout"] -> ["2 x HTTP 500", "timeout"]."""
    runs = [(failure, len(list(group))) for failure, group in groupby(failures)]
    return [f"{count} x {failure}" if count > 1 else failure for failure, count in runs]
