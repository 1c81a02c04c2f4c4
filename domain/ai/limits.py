"""Per-user AI limits, shared by every worker: requests per minute and a daily budget in USD.

Before a model call the gateway reserves the most the call can cost; after it, it settles
the reservation with what the call really cost. The check and the reservation are one Lua
script, so two workers calling for the same user at the same moment cannot both pass on
the last cents: the sum of reserved and spent never exceeds the budget (as long as a call
costs no more than its estimate, which the estimate is built to ensure).

Amounts are kept in Redis as integer micro-dollars. A reservation whose worker died before
settling stays counted until the day ends: the budget errs on the side of spending less.
When Redis cannot be reached the limits cannot be enforced, so no call is made
(`LimitsUnavailable`, a TransientFault: the operation is retried later).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from domain.core.errors import DomainError, TransientFault

logger = logging.getLogger(__name__)

MICRO = 1_000_000
DAY_SECONDS = 86_400
MINUTE = 60

# KEYS: the day's budget hash (spent, reserved), the minute's request counter.
# ARGV: estimate, budget, request limit (0: this call is part of a request already counted).
# Returns {1, spent, reserved} when reserved, {0, ...} over budget, {-1, ...} over the rate.
RESERVE = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local estimate = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
if limit > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= limit then
  return {-1, spent, reserved}
end
if spent + reserved + estimate > tonumber(ARGV[2]) then
  return {0, spent, reserved}
end
redis.call('HINCRBY', KEYS[1], 'reserved', estimate)
redis.call('EXPIRE', KEYS[1], 2 * 86400)
if limit > 0 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], 120)
end
return {1, spent, reserved}
"""

# KEYS: the budget hash. ARGV: the reserved estimate, the actual cost.
SETTLE = """
redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], 2 * 86400)
return 1
"""


class AiLimitExceeded(DomainError):
    """The user's AI requests per minute or daily budget is used up; nothing was sent."""


class LimitsUnavailable(TransientFault):
    """Redis could not be asked, so the limits cannot be checked; try again later."""


@dataclass(frozen=True)
class Reservation:
    budget_key: str
    micro_usd: int


class UsageLimits:
    """The requests-per-minute and daily-budget limits of every user."""

    def __init__(
        self, client: redis.Redis, *, per_minute: int, daily_budget_usd: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self.per_minute = per_minute
        self.daily_budget_usd = daily_budget_usd
        self._clock = clock
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)

    def reserve(self, user_id: uuid.UUID, estimate_usd: float, *, new_request: bool) -> Reservation:
        """Hold `estimate_usd` of the user's budget for one call (and count a request if `new_request`).

        Raises AiLimitExceeded when the minute's requests or the day's budget is used up,
        LimitsUnavailable when Redis does not answer.
        """
        now = self._now()
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        budget_key = f"ai:budget:{user_id}:{day}"
        minute_key = f"ai:rpm:{user_id}:{int(now // MINUTE)}"
        estimate = math.ceil(estimate_usd * MICRO)
        limit = self.per_minute if new_request else 0
        try:
            verdict, spent, reserved = self._reserve(
                keys=[budget_key, minute_key], args=[estimate, round(self.daily_budget_usd * MICRO), limit]
            )
        except redis.RedisError as exc:
            raise LimitsUnavailable(f"AI limits cannot be checked: {type(exc).__name__}") from exc
        if verdict == -1:
            wait = math.ceil(MINUTE - now % MINUTE)
            raise AiLimitExceeded(
                f"AI request limit reached: {self.per_minute} per minute; try again in {wait} s",
                details=[{"limit": "requests_per_minute", "value": self.per_minute, "retryAfter": wait}],
            )
        if verdict == 0:
            left = max(0.0, self.daily_budget_usd - (int(spent) + int(reserved)) / MICRO)
            raise AiLimitExceeded(
                f"daily AI budget of ${self.daily_budget_usd:.2f} is used up (${left:.4f} left, this call may "
                f"cost up to ${estimate_usd:.4f}); it resets at 00:00 UTC",
                details=[{"limit": "daily_budget_usd", "value": self.daily_budget_usd, "remaining": round(left, 6)}],
            )
        return Reservation(budget_key, estimate)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the reservation with what the call really cost.

        If Redis fails now the reservation stays counted instead (never less than the cost):
        the call was made and paid, so failing the operation would only make it pay again.
        """
        try:
            self._settle(keys=[reservation.budget_key], args=[reservation.micro_usd, math.ceil(actual_usd * MICRO)])
        except redis.RedisError as exc:
            logger.warning("AI spend not settled; the reservation stays counted", extra={"error": str(exc)})

    def spent_today(self, user_id: uuid.UUID) -> float:
        """What the user spent today (UTC), settled calls only."""
        day = datetime.fromtimestamp(self._now(), UTC).strftime("%Y-%m-%d")
        value = self._client.hget(f"ai:budget:{user_id}:{day}", "spent")
        return int(value or 0) / MICRO

    def _now(self) -> float:
        return self._clock()
