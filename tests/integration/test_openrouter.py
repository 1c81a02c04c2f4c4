"""The OpenRouter client against a local OpenRouter, with its breakers in the real Redis."""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, formatdate
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from domain.ai.breaker import CircuitBreaker
from domain.ai.chat import ChatRequest, ChatResponse, Message, ModelRefused, ModelUnavailable, TokenUsage
from domain.ai.openrouter import OpenRouterClient
from domain.core.config import Settings, SettingsError
from tests.fakes.openrouter import FakeOpenRouter, FakeUsage

PRIMARY, SECONDARY, THIRD = "test/primary", "test/secondary", "test/third"
PROMPT = "Assess this reference: PRIVATE-PROMPT-TEXT"
COOLDOWN = 30.0


class Clock:
    """A wall clock that tests move by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ai_settings(settings: Settings, fake_openrouter: FakeOpenRouter) -> Settings:
    return settings.model_copy(
        update={
            **fake_openrouter.settings_update(),
            "ai_models": (PRIMARY, SECONDARY),
            "ai_timeout_seconds": 2.0,
            "ai_attempts_per_model": 3,
            "ai_breaker_failures": 3,
            "ai_breaker_cooldown_seconds": COOLDOWN,
            "public_base_url": "https://deepref.example",
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(
    settings: Settings, client: redis.Redis, clock: Clock, sleeps: list[float], jitter: float = 1.0
) -> OpenRouterClient:
    breaker = CircuitBreaker.from_settings(client, settings, clock=clock)
    return OpenRouterClient(settings, breaker, sleep=sleeps.append, jitter=lambda: jitter)


@pytest.fixture
def openrouter(ai_settings: Settings, redis_client: redis.Redis, clock: Clock, sleeps: list[float]) -> OpenRouterClient:
    return make_client(ai_settings, redis_client, clock, sleeps)


@pytest.fixture
def breaker(ai_settings: Settings, redis_client: redis.Redis, clock: Clock) -> CircuitBreaker:
    """A breaker of another process: same Redis, its own instance."""
    return CircuitBreaker.from_settings(redis_client, ai_settings, clock=clock)


def chat(*models: str, json_output: bool = True) -> ChatRequest:
    return ChatRequest(
        messages=(Message("system", "Answer in JSON."), Message("user", PROMPT)),
        models=models or (PRIMARY, SECONDARY),
        max_tokens=300,
        temperature=0.2,
        json_output=json_output,
    )


def models_asked(fake: FakeOpenRouter) -> list[str]:
    return [call.body["model"] for call in fake.requests if call.body]


def completion(content: Any, model: str = PRIMARY) -> dict[str, Any]:
    return {"id": "gen-1", "model": model, "choices": [{"message": {"role": "assistant", "content": content}}]}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_sends_an_openrouter_request_and_reads_the_answer_and_usage(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, ai_settings: Settings
) -> None:
    fake_openrouter.answer = lambda body: '{"score": 80}'
    fake_openrouter.usage = FakeUsage(
        prompt_tokens=100, completion_tokens=20, cached_tokens=40, reasoning_tokens=7, cost=0.00123
    )

    response = openrouter.complete(chat())

    [call] = fake_openrouter.requests
    assert response == ChatResponse(
        content='{"score": 80}',
        model=PRIMARY,
        usage=TokenUsage(prompt_tokens=100, completion_tokens=20, cached_tokens=40, reasoning_tokens=7),
        cost_usd=0.00123,
        provider_id=response.provider_id,
        attempts=1,
    )
    assert response.provider_id and response.provider_id.startswith("gen-")
    assert call.path == "/api/v1/chat/completions"
    assert call.headers["authorization"] == f"Bearer {ai_settings.openrouter_api_key}"
    assert call.headers["http-referer"] == "https://deepref.example"
    assert call.headers["x-title"] == "DeepRef"
    assert call.headers["content-type"] == "application/json"
    assert call.body == {
        "model": PRIMARY,
        "models": [SECONDARY],
        "messages": [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": PROMPT}],
        "max_tokens": 300,
        "temperature": 0.2,
        "response_format": {"type": "json_object"},
        "usage": {"include": True},
    }


def test_plain_text_with_one_model_sends_no_fallbacks_nor_response_format(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.answer = lambda body: "A plain answer."

    response = openrouter.complete(chat(PRIMARY, json_output=False))

    assert response.content == "A plain answer."
    [call] = fake_openrouter.requests
    assert call.body is not None
    assert "models" not in call.body
    assert "response_format" not in call.body


@pytest.mark.parametrize(
    ("usage", "expected_cost"),
    [(None, None), (FakeUsage(prompt_tokens=9, completion_tokens=3, cost=None), None)],
    ids=["no-usage", "no-cost"],
)
def test_missing_usage_reads_as_zero_and_missing_cost_as_none(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, usage: FakeUsage | None, expected_cost: None
) -> None:
    fake_openrouter.usage = usage

    response = openrouter.complete(chat())

    expected = TokenUsage() if usage is None else TokenUsage(prompt_tokens=9, completion_tokens=3)
    assert (response.usage, response.cost_usd) == (expected, expected_cost)


def test_content_is_returned_as_written_even_when_not_json(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, breaker: CircuitBreaker
) -> None:
    fake_openrouter.malformed_next()
    fake_openrouter.respond_next(200, completion('```json\n{"score": 70}\n```'))

    malformed, fenced = openrouter.complete(chat()), openrouter.complete(chat())

    assert (malformed.content, malformed.attempts) == ("Sure! Here is what I think: it went well.", 1)
    assert fenced.content == '```json\n{"score": 70}\n```'
    assert breaker.state(PRIMARY) == "closed"


def test_429_waits_the_retry_after_seconds_then_succeeds(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, sleeps: list[float]
) -> None:
    fake_openrouter.fail_next(429, headers={"Retry-After": "2"})

    response = openrouter.complete(chat())

    assert sleeps == [2.0]
    assert response.attempts == 2
    assert models_asked(fake_openrouter) == [PRIMARY, PRIMARY]


def test_429s_do_not_count_against_the_model(
    ai_settings: Settings,
    redis_client: redis.Redis,
    clock: Clock,
    sleeps: list[float],
    fake_openrouter: FakeOpenRouter,
    breaker: CircuitBreaker,
) -> None:
    client = make_client(ai_settings.model_copy(update={"ai_breaker_failures": 1}), redis_client, clock, sleeps)
    fake_openrouter.fail_next(429, times=3)

    with pytest.raises(ModelUnavailable, match=r"test/primary: 3 x HTTP 429"):
        client.complete(chat(PRIMARY))

    assert breaker.state(PRIMARY) == "closed"
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize(
    "when",
    [
        lambda: format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True),
        lambda: formatdate(time.time() + 10),
    ],
    ids=["gmt", "minus-zero"],
)
def test_retry_after_may_be_an_http_date(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, sleeps: list[float], when: Any
) -> None:
    fake_openrouter.fail_next(503, headers={"Retry-After": when()})

    openrouter.complete(chat())

    [waited] = sleeps
    assert 8.0 <= waited <= 10.0


def test_an_unreadable_retry_after_falls_back_to_backoff(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, sleeps: list[float]
) -> None:
    fake_openrouter.fail_next(503, headers={"Retry-After": "soon"})

    openrouter.complete(chat())

    assert sleeps == [0.5]


def test_a_long_retry_after_moves_on_to_the_next_model_without_waiting(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, sleeps: list[float]
) -> None:
    fake_openrouter.fail_next(429, headers={"Retry-After": "120"})

    response = openrouter.complete(chat())

    assert sleeps == []
    assert (response.model, response.attempts) == (SECONDARY, 2)
    assert models_asked(fake_openrouter) == [PRIMARY, SECONDARY]


def test_server_errors_fall_back_to_the_next_model(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, sleeps: list[float], breaker: CircuitBreaker
) -> None:
    fake_openrouter.fail_model(PRIMARY, 500, times=3)

    response = openrouter.complete(chat())

    assert (response.model, response.attempts) == (SECONDARY, 4)
    assert models_asked(fake_openrouter) == [PRIMARY, PRIMARY, PRIMARY, SECONDARY]
    assert [call.status for call in fake_openrouter.requests] == [500, 500, 500, 200]
    assert sleeps == [0.5, 1.0]
    assert (breaker.state(PRIMARY), breaker.state(SECONDARY)) == ("open", "closed")


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 302])
def test_transient_statuses_are_retried(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, status: int
) -> None:
    fake_openrouter.fail_next(status)

    response = openrouter.complete(chat())

    assert (response.model, response.attempts) == (PRIMARY, 2)


def test_backoff_doubles_up_to_its_cap_with_full_jitter(
    ai_settings: Settings, redis_client: redis.Redis, clock: Clock, sleeps: list[float], fake_openrouter: FakeOpenRouter
) -> None:
    settings = ai_settings.model_copy(update={"ai_attempts_per_model": 7, "ai_breaker_failures": 10})
    client = make_client(settings, redis_client, clock, sleeps, jitter=0.5)
    fake_openrouter.fail_next(500, times=6)

    assert client.complete(chat(PRIMARY)).attempts == 7
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_openrouter_own_fallback_is_reported_and_closes_that_models_breaker(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, breaker: CircuitBreaker
) -> None:
    fake_openrouter.follow_fallbacks = True
    fake_openrouter.fail_model(PRIMARY, 500)
    for _ in range(2):
        breaker.failed(SECONDARY)

    response = openrouter.complete(chat())

    assert (response.model, response.attempts) == (SECONDARY, 1)
    breaker.failed(SECONDARY)  # one more failure: the count was reset by the answer
    assert breaker.state(SECONDARY) == "closed"


def test_a_dated_model_name_in_the_answer_is_returned_and_credited_to_the_model_asked(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, breaker: CircuitBreaker
) -> None:
    for _ in range(2):
        breaker.failed(PRIMARY)
    fake_openrouter.respond_next(200, completion("{}", model="test/primary-2024-07-18"))

    assert openrouter.complete(chat()).model == "test/primary-2024-07-18"
    breaker.failed(PRIMARY)
    assert breaker.state(PRIMARY) == "closed"


def test_timeouts_open_the_breaker_for_every_process_until_a_trial_succeeds(
    ai_settings: Settings,
    redis_client: redis.Redis,
    clock: Clock,
    sleeps: list[float],
    fake_openrouter: FakeOpenRouter,
) -> None:
    settings = ai_settings.model_copy(update={"ai_timeout_seconds": 0.05})
    first, second = (make_client(settings, redis_client, clock, sleeps) for _ in range(2))
    fake_openrouter.delay = 0.3

    with pytest.raises(ModelUnavailable, match=r"^no model answered: test/primary: 3 x timeout$"):
        first.complete(chat(PRIMARY))
    with pytest.raises(ModelUnavailable, match=r"^no model answered: test/primary: breaker open$"):
        second.complete(chat(PRIMARY))
    assert len(fake_openrouter.requests) == 3

    fake_openrouter.delay = 0
    clock.now += COOLDOWN
    response = second.complete(chat(PRIMARY))

    assert (response.model, response.attempts) == (PRIMARY, 1)
    assert len(fake_openrouter.requests) == 4
    fake_openrouter.fail_next(500)
    first.complete(chat(PRIMARY))  # closed again: a failure is retried, not refused
    assert len(fake_openrouter.requests) == 6


def test_a_failed_trial_reopens_the_breaker_after_one_request(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, breaker: CircuitBreaker, clock: Clock
) -> None:
    for _ in range(3):
        breaker.failed(PRIMARY)
    clock.now += COOLDOWN + 1
    fake_openrouter.fail_next(500, times=3)

    with pytest.raises(ModelUnavailable, match=r"test/primary: HTTP 500, breaker open$"):
        openrouter.complete(chat(PRIMARY))

    assert len(fake_openrouter.requests) == 1
    assert breaker.state(PRIMARY) == "open"
    clock.now += COOLDOWN - 1
    assert breaker.state(PRIMARY) == "open"
    clock.now += 1
    assert breaker.state(PRIMARY) == "half_open"


def test_half_open_lets_exactly_one_trial_through_across_processes(
    ai_settings: Settings, redis_client: redis.Redis, clock: Clock
) -> None:
    one, other = (CircuitBreaker.from_settings(redis_client, ai_settings, clock=clock) for _ in range(2))
    for _ in range(3):
        one.failed(PRIMARY)
    assert (one.allow(PRIMARY), other.allow(PRIMARY), other.state(PRIMARY)) == (False, False, "open")

    clock.now += COOLDOWN
    assert other.state(PRIMARY) == "half_open"
    assert [other.allow(PRIMARY), one.allow(PRIMARY), other.allow(PRIMARY)] == [True, False, False]

    other.succeeded(PRIMARY)
    assert (one.state(PRIMARY), one.allow(PRIMARY), one.allow(PRIMARY)) == ("closed", True, True)


def test_a_trial_that_never_reports_expires(redis_client: redis.Redis, clock: Clock) -> None:
    breaker = CircuitBreaker(redis_client, failures=1, cooldown=COOLDOWN, trial_timeout=0.05, clock=clock)
    breaker.failed(PRIMARY)
    clock.now += COOLDOWN
    assert [breaker.allow(PRIMARY), breaker.allow(PRIMARY)] == [True, False]

    time.sleep(0.1)

    assert breaker.allow(PRIMARY) is True


def test_failures_while_open_do_not_extend_the_cooldown(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.failed(PRIMARY)
    clock.now += COOLDOWN / 2
    breaker.failed(PRIMARY)  # a call that was in flight when it opened
    clock.now += COOLDOWN / 2

    assert breaker.state(PRIMARY) == "half_open"


def test_a_success_resets_the_count_of_consecutive_failures(breaker: CircuitBreaker) -> None:
    for _ in range(2):
        breaker.failed(PRIMARY)
    breaker.succeeded(PRIMARY)
    for _ in range(2):
        breaker.failed(PRIMARY)
    assert breaker.state(PRIMARY) == "closed"
    breaker.failed(PRIMARY)
    assert breaker.state(PRIMARY) == "open"


def test_breaker_keys_expire(breaker: CircuitBreaker, redis_client: redis.Redis, clock: Clock) -> None:
    for _ in range(3):
        breaker.failed(PRIMARY)
    clock.now += COOLDOWN
    breaker.allow(PRIMARY)

    keys = redis_client.keys("ai:breaker*")
    assert len(keys) == 2
    assert all(0 < redis_client.pttl(key) <= (COOLDOWN + 3600) * 1000 for key in keys)


@pytest.mark.parametrize("status", [400, 402, 403, 404, 413])
def test_a_refusal_raises_at_once_without_the_prompt(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, status: int
) -> None:
    fake_openrouter.fail_next(status, body={"error": {"code": status, "message": "Nope, not this one"}})

    with pytest.raises(ModelRefused) as refused:
        openrouter.complete(chat())

    assert str(refused.value) == f"OpenRouter refused the request for test/primary: HTTP {status} (Nope, not this one)"
    assert len(fake_openrouter.requests) == 1


def test_a_bad_key_is_refused_and_never_repeated(
    ai_settings: Settings,
    redis_client: redis.Redis,
    clock: Clock,
    sleeps: list[float],
    fake_openrouter: FakeOpenRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong_key = "sk-or-v1-wrong-key"
    client = make_client(ai_settings.model_copy(update={"openrouter_api_key": wrong_key}), redis_client, clock, sleeps)

    with pytest.raises(ModelRefused, match=r"HTTP 401 \(No auth credentials found\)$") as refused:
        client.complete(chat())

    assert len(fake_openrouter.requests) == 1
    assert wrong_key not in str(refused.value)
    assert wrong_key not in caplog.text


@pytest.mark.parametrize(
    ("body", "suffix"),
    [
        (b"<html>Bad Request</html>", ""),
        ([1, 2], ""),
        ({"error": "bad"}, ""),
        ({"error": {"message": None}}, ""),
        ({"error": {"message": "key {key} is malformed"}}, " (key [key] is malformed)"),
    ],
    ids=["not-json", "list", "error-string", "no-message", "echoes-key"],
)
def test_a_refusal_message_never_carries_the_key(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, ai_settings: Settings, body: Any, suffix: str
) -> None:
    key = ai_settings.openrouter_api_key
    assert key
    if isinstance(body, dict) and isinstance(body["error"], dict) and body["error"]["message"]:
        body = {"error": {"message": body["error"]["message"].format(key=key)}}
    fake_openrouter.fail_next(400, body=body)

    with pytest.raises(ModelRefused) as refused:
        openrouter.complete(chat())

    assert str(refused.value) == f"OpenRouter refused the request for test/primary: HTTP 400{suffix}"


def test_no_model_answering_raises_unavailable_with_a_summary(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter, breaker: CircuitBreaker
) -> None:
    for _ in range(3):
        breaker.failed(THIRD)
    fake_openrouter.fail_model(PRIMARY, 500, times=3)
    fake_openrouter.fail_model(SECONDARY, 502, times=2)
    fake_openrouter.fail_model(SECONDARY, 503, times=1)

    with pytest.raises(ModelUnavailable) as unavailable:
        openrouter.complete(chat(PRIMARY, SECONDARY, THIRD))

    assert str(unavailable.value) == (
        "no model answered: test/primary: 3 x HTTP 500; "
        "test/secondary: 2 x HTTP 502, HTTP 503; test/third: breaker open"
    )
    first = fake_openrouter.requests[0].body
    assert first is not None
    assert first["models"] == [SECONDARY]  # an open breaker keeps a model out of OpenRouter's fallbacks
    assert len(fake_openrouter.requests) == 6


def test_failed_attempts_are_logged_without_the_prompt_or_the_key(
    openrouter: OpenRouterClient,
    fake_openrouter: FakeOpenRouter,
    ai_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openrouter.fail_next(500)

    with caplog.at_level(logging.WARNING, logger="domain.ai.openrouter"):
        openrouter.complete(chat())

    assert "OpenRouter attempt 1 for test/primary failed: HTTP 500" in caplog.text
    assert "PRIVATE-PROMPT-TEXT" not in caplog.text
    assert str(ai_settings.openrouter_api_key) not in caplog.text


@pytest.mark.parametrize(
    ("body", "failure"),
    [
        (b"<html>502 Bad Gateway</html>", "body not JSON"),
        ([1, 2], "body not an object"),
        ({"error": {"code": 502, "message": "Upstream error"}}, "error 502 in body"),
        ({"error": "overloaded"}, "error in body"),
        ({"id": "gen-1", "choices": []}, "no usable answer"),
        (completion(None), "no usable answer"),
        ({"choices": [{"message": "hello"}]}, "no usable answer"),
    ],
    ids=["not-json", "list", "error-object", "error-string", "no-choice", "null-content", "no-message-object"],
)
def test_an_unusable_200_is_a_transient_failure(
    ai_settings: Settings,
    redis_client: redis.Redis,
    clock: Clock,
    sleeps: list[float],
    fake_openrouter: FakeOpenRouter,
    body: Any,
    failure: str,
) -> None:
    client = make_client(ai_settings.model_copy(update={"ai_attempts_per_model": 1}), redis_client, clock, sleeps)
    fake_openrouter.respond_next(200, body)

    with pytest.raises(ModelUnavailable, match=rf"^no model answered: test/primary: {failure}$"):
        client.complete(chat(PRIMARY))


def test_unusable_200s_are_retried_and_only_broken_bodies_count_against_the_model(
    ai_settings: Settings,
    redis_client: redis.Redis,
    clock: Clock,
    sleeps: list[float],
    fake_openrouter: FakeOpenRouter,
    breaker: CircuitBreaker,
) -> None:
    settings = ai_settings.model_copy(update={"ai_breaker_failures": 2, "ai_attempts_per_model": 4})
    client = make_client(settings, redis_client, clock, sleeps)
    fake_openrouter.respond_next(200, {"id": "gen-1", "choices": []}, times=2)
    fake_openrouter.respond_next(200, b"<html>Bad Gateway</html>")

    response = client.complete(chat(PRIMARY))

    assert (response.content, response.attempts) == ("{}", 4)
    # Two empty answers did not open it (threshold 2); the broken body counted, then the answer reset it.
    assert breaker.state(PRIMARY) == "closed"
    fake_openrouter.respond_next(200, {"error": {"code": 502, "message": "Upstream error"}}, times=2)
    with pytest.raises(ModelUnavailable, match=r"test/primary: 2 x error 502 in body, breaker open$"):
        client.complete(chat(PRIMARY))
    assert breaker.state(PRIMARY) == "open"


def test_an_unreachable_openrouter_counts_against_the_model(
    ai_settings: Settings, redis_client: redis.Redis, clock: Clock, sleeps: list[float], breaker: CircuitBreaker
) -> None:
    settings = ai_settings.model_copy(update={"openrouter_base_url": f"http://127.0.0.1:{closed_port()}/api/v1"})

    with pytest.raises(ModelUnavailable, match=r"test/primary: 3 x ConnectionError$"):
        make_client(settings, redis_client, clock, sleeps).complete(chat(PRIMARY))

    assert breaker.state(PRIMARY) == "open"


def test_an_unreachable_redis_does_not_stop_ai_work(
    ai_settings: Settings, fake_openrouter: FakeOpenRouter, caplog: pytest.LogCaptureFixture
) -> None:
    dead = redis.Redis(port=closed_port(), socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    fake_openrouter.fail_next(500)

    for _ in range(2):  # Redis fails, then is skipped for a while
        breaker = CircuitBreaker.from_settings(dead, ai_settings)
        client = OpenRouterClient(ai_settings, breaker, sleep=lambda seconds: None)
        assert client.complete(chat(PRIMARY)).model == PRIMARY
        assert (breaker.allow(PRIMARY), breaker.state(PRIMARY)) == (True, "closed")
        breaker.failed(PRIMARY)
        breaker.succeeded(PRIMARY)

    assert "AI circuit breaker unavailable" in caplog.text
    assert len(fake_openrouter.requests) == 3


@pytest.mark.parametrize("method", ["allow", "state", "failed", "succeeded"])
def test_each_breaker_operation_survives_an_unreachable_redis(method: str) -> None:
    dead = redis.Redis(port=closed_port(), socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    breaker = CircuitBreaker(dead, failures=1, cooldown=COOLDOWN)

    results = [getattr(breaker, method)(PRIMARY) for _ in range(2)]

    assert results == {"allow": [True, True], "state": ["closed", "closed"]}.get(method, [None, None])


def test_a_request_without_models_is_refused(openrouter: OpenRouterClient) -> None:
    with pytest.raises(ModelRefused, match="no model"):
        openrouter.complete(ChatRequest(messages=(Message("user", "hi"),), models=()))


def test_the_client_needs_an_api_key(ai_settings: Settings, breaker: CircuitBreaker) -> None:
    with pytest.raises(SettingsError, match="OPENROUTER_API_KEY"):
        OpenRouterClient(ai_settings.model_copy(update={"openrouter_api_key": None}), breaker)


def test_many_concurrent_completions_are_answered_together(
    openrouter: OpenRouterClient, fake_openrouter: FakeOpenRouter
) -> None:
    # Each answer waits until 50 requests are in the server at once: calls made one at a
    # time (or through too small a connection pool) would break the barrier and fail.
    together = threading.Barrier(50, timeout=30)

    def answer(body: dict[str, Any]) -> str:
        together.wait()
        return "{}"

    fake_openrouter.answer = answer
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda _: openrouter.complete(chat()), range(100)))

    assert {r.model for r in responses} == {PRIMARY}
    assert len(fake_openrouter.requests) == 100
