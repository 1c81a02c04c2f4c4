"""Fixed-window rate limits counted in Redis, shared by every process.

If Redis cannot be reached the limiter lets requests through (an outage of the limiter
must not become an outage of the API), logs it, and stops trying for a short while so
requests do not each pay a connection timeout.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis

from domain.core.redis import OutageBackoff

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int
    degraded: bool = False


# Count a hit in KEYS[1] (expiring with its window) and return the count, then the values of
# any further keys: one round trip for the limit and whatever the request needs next.
COUNT_AND_READ = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local reply = {count}
for i = 2, #KEYS do reply[i] = redis.call('GET', KEYS[i]) end
return reply
"""


class RateLimiter:
    def __init__(self, client: redis.Redis, prefix: str = "rl") -> None:
        self._client = client
        self._prefix = prefix
        self._backoff = OutageBackoff()
        self._count = client.register_script(COUNT_AND_READ)

    def hit(self, bucket: str, subject: str, limit: int, window: int = 60) -> Decision:
        """Count one request of `subject` in `bucket` and say whether it is within `limit`."""
        return self.hit_with(bucket, subject, limit, window)[0]

    def hit_with(
        self, bucket: str, subject: str, limit: int, window: int = 60, also_get: tuple[str, ...] = ()
    ) -> tuple[Decision, list[bytes | None] | None]:
        """`hit`, also reading the keys `also_get` in the same round trip; their values, or None."""
        if self._backoff.active:
            return Decision(True, limit, limit, window, degraded=True), None
        now = time.time()
        window_index = int(now // window)
        key = f"{self._prefix}:{bucket}:{subject}:{window_index}"
        try:
            count, *values = self._count(keys=[key, *also_get], args=[window + 1])
        except redis.RedisError as exc:
            self._backoff.failed()
            logger.warning("rate limiter unavailable, letting requests through", extra={"error": str(exc)})
            return Decision(True, limit, limit, window, degraded=True), None
        reset_after = max(1, int((window_index + 1) * window - now + 0.999))
        return Decision(count <= limit, limit, max(0, limit - count), reset_after), values
