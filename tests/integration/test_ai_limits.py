"""Per-user AI limits in Redis: requests per minute and a daily budget, reserve then settle."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from domain.ai.limits import AiLimitExceeded, LimitsUnavailable, UsageLimits

NOON = 1_785_000_000.0  # a fixed instant; the budget day and minute follow from it


def limits(client: redis.Redis, per_minute: int = 5, budget: float = 0.01, now: float = NOON) -> UsageLimits:
    return UsageLimits(client, per_minute=per_minute, daily_budget_usd=budget, clock=lambda: now)


def test_a_reservation_is_settled_at_the_real_cost(redis_client):
    user = uuid.uuid4()
    gate = limits(redis_client)
    reservation = gate.reserve(user, 0.004, new_request=True)
    assert gate.spent_today(user) == 0
    gate.settle(reservation, 0.0015)
    assert gate.spent_today(user) == pytest.approx(0.0015)
    # The reservation is released: 0.0085 left, so a 0.008 call still fits.
    gate.settle(gate.reserve(user, 0.008, new_request=True), 0.008)
    assert gate.spent_today(user) == pytest.approx(0.0095)


def test_the_budget_refuses_a_call_that_could_overspend(redis_client):
    user = uuid.uuid4()
    gate = limits(redis_client)
    held = gate.reserve(user, 0.006, new_request=True)
    with pytest.raises(AiLimitExceeded, match=r"daily AI budget of \$0.01 is used up \(\$0.0040 left") as refused:
        gate.reserve(user, 0.005, new_request=True)
    assert refused.value.details == [{"limit": "daily_budget_usd", "value": 0.01, "remaining": 0.004}]
    gate.settle(held, 0.001)
    gate.reserve(user, 0.005, new_request=True)  # fits once the first call cost less than held
    # Another user and the next day have budgets of their own.
    gate.reserve(uuid.uuid4(), 0.009, new_request=True)
    limits(redis_client, now=NOON + 86_400).reserve(user, 0.009, new_request=True)


def test_requests_per_minute_are_counted_once_per_request(redis_client):
    user = uuid.uuid4()
    gate = limits(redis_client, per_minute=2, budget=1.0)
    gate.reserve(user, 0.001, new_request=True)
    gate.reserve(user, 0.001, new_request=False)  # the repair of the same request
    gate.reserve(user, 0.001, new_request=True)
    with pytest.raises(AiLimitExceeded, match="AI request limit reached: 2 per minute; try again in") as refused:
        gate.reserve(user, 0.001, new_request=True)
    assert refused.value.details[0]["limit"] == "requests_per_minute"
    limits(redis_client, per_minute=2, budget=1.0, now=NOON + 60).reserve(user, 0.001, new_request=True)


def test_concurrent_reservations_never_exceed_the_budget(redis_client, settings):
    user = uuid.uuid4()
    admitted: list[float] = []
    refused: list[str] = []

    def call() -> None:
        client = redis.Redis.from_url(settings.require_redis_url())
        gate = UsageLimits(client, per_minute=1000, daily_budget_usd=0.01)
        for _ in range(10):
            try:
                reservation = gate.reserve(user, 0.0007, new_request=True)
            except AiLimitExceeded as exc:
                refused.append(exc.message)
                continue
            gate.settle(reservation, 0.0005)
            admitted.append(0.0005)
        client.close()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spent = UsageLimits(redis_client, per_minute=1, daily_budget_usd=0.01).spent_today(user)
    assert spent == pytest.approx(sum(admitted))
    assert spent <= 0.01
    assert len(admitted) >= 14  # each admitted call left room for the next while it could
    assert refused and len(admitted) + len(refused) == 80


def test_without_redis_no_call_is_made_and_settling_is_skipped(redis_client):
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    gate = limits(dead)
    with pytest.raises(LimitsUnavailable, match="AI limits cannot be checked"):
        gate.reserve(uuid.uuid4(), 0.001, new_request=True)
    reservation = limits(redis_client).reserve(uuid.uuid4(), 0.001, new_request=True)
    gate.settle(reservation, 0.001)  # logged, not raised: the call was already made
