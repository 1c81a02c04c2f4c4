"""The one way to a language model: limits, prompt, call, validation, repair, accounting.

For each feature call the gateway renders the feature's prompt template, reserves the most
the call can cost against the user's limits, calls the provider, settles the reservation
with the real cost, records the call in `ai_usage` (in its own transaction, so a failed
operation still shows what it spent), and validates the answer against the feature's
JSON model. An answer that does not validate is sent back once with what was wrong; a
second invalid answer fails with `AiOutputInvalid`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from domain.ai import pricing, prompts
from domain.ai.chat import ChatProvider, ChatRequest, ChatResponse, Message, ModelRefused, ModelUnavailable
from domain.ai.limits import UsageLimits
from domain.ai.models import AiUsage
from domain.core.db import Database
from domain.core.errors import DomainError

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

MAX_PROBLEMS = 10
REPAIR = (
    "Your answer could not be used: {problems}. Reply again with only the corrected JSON object, "
    "with the keys and types the instructions ask for."
)


class AiOutputInvalid(DomainError):
    """The model's answer did not match the feature's JSON, even after one repair request."""


@dataclass(frozen=True)
class Feature(Generic[T]):
    """A use of the model: its prompt template, the JSON it must answer, a completion budget."""

    name: str
    template_id: str
    template_version: int
    output: type[T]
    max_tokens: int


@dataclass(frozen=True)
class Caller:
    """Whose limits a call counts against, and which operation made it."""

    user_id: uuid.UUID
    operation_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Answered(Generic[T]):
    value: T
    model: str


Check = Callable[[T], list[str]]


class Gateway:
    def __init__(
        self, provider: ChatProvider, models: tuple[str, ...], limits: UsageLimits, ledger: UsageLedger
    ) -> None:
        self.provider = provider
        self.models = models
        self.limits = limits
        self.ledger = ledger

    def complete(
        self, feature: Feature[T], values: dict[str, object], caller: Caller, check: Check[T] | None = None
    ) -> Answered[T]:
        """Ask the model for the feature's JSON about `values`; validate it (and `check` it).

        Raises AiLimitExceeded (the user's limits; nothing sent), AiOutputInvalid (two
        unusable answers), ModelUnavailable (retry later) or ModelRefused.
        """
        messages = prompts.load(feature.template_id, feature.template_version).render(values)
        first = self._answer(feature, messages, caller, check, new_request=True)
        if first.value is not None:
            return Answered(first.value, first.model)
        logger.warning("AI answer invalid, asking for a repair", extra={"feature": feature.name, "model": first.model})
        repair = (
            *messages,
            Message("assistant", first.content),
            Message("user", REPAIR.format(problems="; ".join(first.problems[:MAX_PROBLEMS]))),
        )
        second = self._answer(feature, repair, caller, check, new_request=False)
        if second.value is None:
            raise AiOutputInvalid(
                f"the model's answer for {feature.name} did not match the expected JSON twice: "
                f"{'; '.join(second.problems[:MAX_PROBLEMS])}"
            )
        return Answered(second.value, second.model)

    def _answer(
        self,
        feature: Feature[T],
        messages: tuple[Message, ...],
        caller: Caller,
        check: Check[T] | None,
        *,
        new_request: bool,
    ) -> _Attempt[T]:
        """One call, recorded, and its answer parsed."""
        call = self._call(feature, messages, caller, new_request=new_request)
        value, problems = _parse(feature.output, call.response.content, check)
        self._record(feature, caller, call, ok=value is not None)
        return _Attempt(value, problems, call.response.content, call.response.model)

    def _call(self, feature: Feature[T], messages: tuple[Message, ...], caller: Caller, *, new_request: bool) -> _Timed:
        prompt_tokens = pricing.estimate_prompt_tokens([message.content for message in messages])
        estimate = pricing.most_expensive(self.models, prompt_tokens, feature.max_tokens)
        reservation = self.limits.reserve(caller.user_id, estimate, new_request=new_request)
        started = time.perf_counter()
        try:
            response = self.provider.complete(ChatRequest(messages, self.models, max_tokens=feature.max_tokens))
        except (ModelUnavailable, ModelRefused):
            self.limits.settle(reservation, 0.0)
            self._record_failure(feature, caller, _elapsed_ms(started))
            raise
        cost = response.cost_usd if response.cost_usd is not None else pricing.cost_of(response.model, response.usage)
        self.limits.settle(reservation, cost)
        return _Timed(response, cost, _elapsed_ms(started), response.cost_usd is not None)

    def _record(self, feature: Feature[T], caller: Caller, call: _Timed, *, ok: bool) -> None:
        response = call.response
        usage = response.usage
        self.ledger.add(
            feature,
            caller,
            provider=self.provider.name,
            model=response.model,
            outcome="ok" if ok else "invalid_output",
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_usd=Decimal(str(call.cost_usd)),
            cost_source="provider" if call.reported else "price_table",
            latency_ms=call.latency_ms,
            attempts=response.attempts,
        )

    def _record_failure(self, feature: Feature[T], caller: Caller, latency_ms: int) -> None:
        self.ledger.add(
            feature,
            caller,
            provider=self.provider.name,
            model=self.models[0],
            outcome="failed",
            cost_usd=Decimal(0),
            cost_source="none",
            latency_ms=latency_ms,
        )


class UsageLedger:
    """Writes `ai_usage` rows, each in its own transaction (they outlive a failed operation)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def record_local(self, feature: Feature[Any], caller: Caller, model: str, latency_ms: int) -> None:
        """Record an assessment by the local heuristics: no prompt (template version 0), no tokens, no cost."""
        self.add(
            feature,
            caller,
            provider="local",
            model=model,
            template_version=0,
            outcome="ok",
            cost_usd=Decimal(0),
            cost_source="none",
            latency_ms=latency_ms,
        )

    def add(self, feature: Feature[Any], caller: Caller, **columns: Any) -> None:
        """Record one call of `feature` for `caller`; `columns` are AiUsage's."""
        columns.setdefault("template_version", feature.template_version)
        with self.database.transaction() as session:
            session.add(
                AiUsage(
                    id=uuid.uuid4(),
                    user_id=caller.user_id,
                    operation_id=caller.operation_id,
                    feature=feature.name,
                    template_id=feature.template_id,
                    **columns,
                )
            )


@dataclass(frozen=True)
class _Attempt(Generic[T]):
    value: T | None
    problems: list[str]
    content: str
    model: str


@dataclass(frozen=True)
class _Timed:
    response: ChatResponse
    cost_usd: float
    latency_ms: int
    reported: bool


def _parse(output: type[T], content: str, check: Check[T] | None) -> tuple[T | None, list[str]]:
    """The answer as the feature's model, or None and what is wrong with it."""
    try:
        data = json.loads(_strip_fence(content))
    except json.JSONDecodeError as exc:
        return None, [f"the answer is not JSON ({exc.msg} at character {exc.pos})"]
    try:
        value = output.model_validate(data)
    except ValidationError as exc:
        return None, [f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors()]
    problems = check(value) if check is not None else []
    return (None, problems) if problems else (value, [])


def _strip_fence(content: str) -> str:
    """Models sometimes wrap JSON in a ``` fence despite being asked not to."""
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
