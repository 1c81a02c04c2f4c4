"""A circuit breaker per model, kept in Redis so every worker process shares it.

Closed: calls go through and consecutive failures are counted. At `failures` in a row the
breaker opens: calls are refused for `cooldown` seconds. After that it is half-open: one
trial call (across all processes) goes through; its success closes the breaker, its
failure opens it for a fresh cool-down. The trial holds a key that expires after
`trial_timeout`, so a process that dies during its trial does not keep the model shut.

The time comes from `clock` (passed to Redis by the scripts), so tests can move it.
If Redis is unreachable the breaker stands aside: `allow` says yes and outcomes are not
recorded (a breaker outage must not become an AI outage); it logs a warning and does
not try Redis again for a short while.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Literal

import redis

from domain.core.config import Settings
from domain.core.redis import OutageBackoff

logger = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]

# Seconds a breaker's key outlives its last failure: long enough to span the cool-down,
# short enough that breakers of models no longer used disappear.
STATE_TTL_SECONDS = 3600
# Seconds a half-open trial may take beyond the request timeout before another is allowed.
TRIAL_MARGIN_SECONDS = 5.0

# KEYS: state hash, trial key. ARGV: now, cool-down, trial TTL in ms.
# 1 when a call may go through: closed, or half-open and this caller won the trial.
ALLOW = """
local opened = redis.call('HGET', KEYS[1], 'opened_at')
if not opened then return 1 end
if tonumber(ARGV[1]) < tonumber(opened) + tonumber(ARGV[2]) then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""

# KEYS: state hash, trial key. ARGV: now, threshold, cool-down, state TTL in seconds.
# Count a failure; open at the threshold; a failure once the cool-down is over (the
# half-open trial) opens it again from now. Failures of calls still in flight while it
# is open do not extend the cool-down.
FAIL = """
local opened = redis.call('HGET', KEYS[1], 'opened_at')
local count = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if opened then
  if tonumber(ARGV[1]) >= tonumber(opened) + tonumber(ARGV[3]) then
    redis.call('HSET', KEYS[1], 'opened_at', ARGV[1])
    redis.call('DEL', KEYS[2])
  end
elseif count >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'opened_at', ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return count
"""


class CircuitBreaker:
    """See the module docstring; one breaker per model name, all in one Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        failures: int,
        cooldown: float,
        trial_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.failures = failures
        self.cooldown = cooldown
        self.trial_timeout = trial_timeout
        self._clock = clock
        self._allow = client.register_script(ALLOW)
        self._fail = client.register_script(FAIL)
        self._backoff = OutageBackoff()

    @classmethod
    def from_settings(
        cls, client: redis.Redis, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> CircuitBreaker:
        """Build the breaker the AI settings describe (trial a little longer than a request)."""
        return cls(
            client,
            failures=settings.ai_breaker_failures,
            cooldown=settings.ai_breaker_cooldown_seconds,
            trial_timeout=settings.ai_timeout_seconds + TRIAL_MARGIN_SECONDS,
            clock=clock,
        )

    def allow(self, model: str) -> bool:
        """Say whether a call to `model` may go through now (True when Redis is unreachable).

        In the half-open state this claims the single trial: only one caller gets True.
        """
        if self._backoff.active:
            return True
        trial_ms = max(1, math.ceil(self.trial_timeout * 1000))
        try:
            allowed = self._allow(keys=_keys(model), args=[self._clock(), self.cooldown, trial_ms])
        except redis.RedisError as exc:
            self._unavailable(exc)
            return True
        return bool(allowed)

    def succeeded(self, model: str) -> None:
        """Record a good answer from `model`: close its breaker and reset its count."""
        if self._backoff.active:
            return
        try:
            self._client.delete(*_keys(model))
        except redis.RedisError as exc:
            self._unavailable(exc)

    def failed(self, model: str) -> None:
        """Record a failure of `model`; open its breaker at the threshold, or again after a failed trial."""
        if self._backoff.active:
            return
        ttl = math.ceil(self.cooldown) + STATE_TTL_SECONDS
        try:
            self._fail(keys=_keys(model), args=[self._clock(), self.failures, self.cooldown, ttl])
        except redis.RedisError as exc:
            self._unavailable(exc)

    def state(self, model: str) -> BreakerState:
        """Return the state of `model`'s breaker ("closed" when Redis is unreachable)."""
        if self._backoff.active:
            return "closed"
        try:
            opened = self._client.hget(_keys(model)[0], "opened_at")
        except redis.RedisError as exc:
            self._unavailable(exc)
            return "closed"
        if opened is None:
            return "closed"
        return "open" if self._clock() < float(opened) + self.cooldown else "half_open"

    def _unavailable(self, exc: redis.RedisError) -> None:
        self._backoff.failed()
        logger.warning("AI circuit breaker unavailable, letting calls through: %s", exc, extra={"error": str(exc)})


def _keys(model: str) -> list[str]:
    return [f"ai:breaker:{model}", f"ai:breaker-trial:{model}"]
