"""A local HTTP server speaking OpenRouter's (OpenAI-style) chat-completions API.

    with FakeOpenRouter() as openrouter:
        settings = settings.model_copy(update=openrouter.settings_update())
        ...
        [call] = openrouter.requests
        assert call.body["model"] == "openai/gpt-4o-mini"

    openrouter.answer = lambda body: '{"score": 80}'   # the content of every answer
    openrouter.usage = FakeUsage(prompt_tokens=100, cost=None)  # reported usage (None: no `usage`)
    openrouter.fail_next(500)                           # the next request gets a 500
    openrouter.fail_next(429, headers={"Retry-After": "2"})
    openrouter.fail_model("openai/gpt-4o-mini", 500, times=3)  # requests for that model
    openrouter.malformed_next()                         # a 200 whose content is not JSON
    openrouter.respond_next(200, b"not json")           # any status, body (bytes or JSON-able), headers
    openrouter.delay = 0.5                              # seconds before every answer

It checks the bearer key (401 otherwise) and answers POST /api/v1/chat/completions with
the requested `model`, an `id`, `choices[0].message.content` and `usage`. With
`follow_fallbacks` set it behaves as OpenRouter does with a `models` list: a request
whose `model` has a failure scheduled is answered by the first listed fallback that has
none. Every request is recorded in `requests`. It serves each connection on its own
thread (HTTP/1.1 keep-alive), so it takes many concurrent requests.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.served import HOST, ServedFake

API_PATH = "/api/v1"
COMPLETIONS_PATH = API_PATH + "/chat/completions"


@dataclass(frozen=True)
class FakeUsage:
    """The usage the fake reports; `cost=None` leaves `usage.cost` out."""

    prompt_tokens: int = 12
    completion_tokens: int = 5
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = 0.000042


@dataclass(frozen=True)
class ChatCall:
    """One request the fake answered, whatever the outcome."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    status: int


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # For a completion: the model that answers, and the content (else `answer` gives it).
    model: str | None = None
    content: str | None = None


class FakeOpenRouter(ServedFake):
    """See the module docstring."""

    name = "fake-openrouter"

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key or "sk-or-v1-" + secrets.token_hex(32)
        self.answer: Callable[[dict[str, Any]], str] = lambda body: "{}"
        self.usage: FakeUsage | None = FakeUsage()
        self.delay = 0.0
        self.follow_fallbacks = False
        self._requests: list[ChatCall] = []
        self._scripted: list[_Reply] = []
        self._model_failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The OPENROUTER_BASE_URL that reaches this fake."""
        return f"http://{HOST}:{self.port}{API_PATH}"

    @property
    def requests(self) -> list[ChatCall]:
        """A copy of the requests answered so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def environment(self) -> dict[str, str]:
        """Environment variables that point a process (e.g. a worker) at this fake."""
        return {"AI_PROVIDER": "openrouter", "OPENROUTER_BASE_URL": self.url, "OPENROUTER_API_KEY": self.api_key}

    def settings_update(self) -> dict[str, Any]:
        """The same, as a `Settings.model_copy(update=...)` argument."""
        return {"ai_provider": "openrouter", "openrouter_base_url": self.url, "openrouter_api_key": self.api_key}

    def fail_next(
        self, status: int, *, times: int = 1, headers: dict[str, str] | None = None, body: Any = None
    ) -> None:
        """Answer the next `times` authenticated requests with `status` (an OpenRouter error body by default)."""
        self.respond_next(
            status, _error(status, "Injected failure") if body is None else body, times=times, headers=headers
        )

    def respond_next(self, status: int, body: Any, *, times: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next `times` authenticated requests with `status`, `body` (bytes sent as is) and `headers`."""
        with self._lock:
            self._scripted.extend([_Reply(status, body, dict(headers or {}))] * times)

    def fail_model(self, model: str, status: int, *, times: int = 1) -> None:
        """Answer the next `times` requests for `model` with `status`."""
        with self._lock:
            self._model_failures.setdefault(model, []).extend([status] * times)

    def malformed_next(self, times: int = 1) -> None:
        """Answer the next `times` requests with a 200 whose message content is not JSON."""
        with self._lock:
            self._scripted.extend([_Reply(200, content="Sure! Here is what I think: it went well.")] * times)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(_Handler):
            openrouter = fake

        return Handler

    def _respond(self, path: str, headers: dict[str, str], body: dict[str, Any] | None) -> _Reply:
        """Decide the reply to one POST and record it (called from the server's threads)."""
        with self._lock:
            reply = self._decide(path, headers, body)
            self._requests.append(ChatCall(path, headers, body, reply.status))
        if reply.model is not None and body is not None:
            # Built outside the lock: `answer` may be slow.
            return replace(reply, body=self._completion(body, reply))
        return reply

    def _decide(self, path: str, headers: dict[str, str], body: dict[str, Any] | None) -> _Reply:
        if path != COMPLETIONS_PATH:
            return _Reply(404, _error(404, "Not Found"))
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return _Reply(401, _error(401, "No auth credentials found"))
        if self._scripted:
            scripted = self._scripted.pop(0)
            if scripted.content is not None and body is not None:  # malformed_next
                return replace(scripted, model=str(body.get("model")))
            return scripted
        if body is None or not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
            return _Reply(400, _error(400, "Invalid request: model and messages are required"))
        return self._route(body)

    def _route(self, body: dict[str, Any]) -> _Reply:
        candidates = [body["model"]]
        if self.follow_fallbacks:
            candidates += [m for m in body.get("models") or [] if isinstance(m, str)]
        status = 200
        for model in candidates:
            failures = self._model_failures.get(model)
            if not failures:
                return _Reply(200, model=model)
            status = failures.pop(0)
        return _Reply(status, _error(status, "Injected failure"))

    def _completion(self, body: dict[str, Any], reply: _Reply) -> dict[str, Any]:
        content = self.answer(body) if reply.content is None else reply.content
        completion: dict[str, Any] = {
            "id": "gen-" + secrets.token_hex(12),
            "provider": "Fake",
            "model": reply.model,
            "object": "chat.completion",
            "created": int(time.time()),
            "choices": [
                {
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": "stop",
                    "native_finish_reason": "stop",
                    "message": {"role": "assistant", "content": content, "refusal": None},
                }
            ],
        }
        if self.usage is not None:
            completion["usage"] = _usage(self.usage)
        return completion


def _usage(usage: FakeUsage) -> dict[str, Any]:
    reported: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
    if usage.cost is not None:
        reported["cost"] = usage.cost
    return reported


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    openrouter: FakeOpenRouter
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, keep-alive answers wait 40 ms on delayed ACKs.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.openrouter._respond(self.path, headers, parsed if isinstance(parsed, dict) else None)
        if self.openrouter.delay:
            time.sleep(self.openrouter.delay)
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (its timeout)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""
