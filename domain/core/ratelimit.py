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


class RateLimiter:
    def __init__(self, client: redis.Redis, prefix: str = "rl") -> None:
        self._client = client
        self._prefix = prefix
        self._backoff = OutageBackoff()

    def hit(self, bucket: str, subject: str, limit: int, window: int = 60) -> Decision:
        """Count one request of `subject` in `bucket` and say whether it is within `limit`."""
        if self._backoff.active:
            return Decision(True, limit, limit, window, degraded=True)
        now = time.time()
        window_index = int(now // window)
        key = f"{self._prefix}:{bucket}:{subject}:{window_index}"
        try:
            count = int(self._client.incr(key))
            if count == 1:  # the window's first hit; the key name changes with each window anyway
                self._client.expire(key, window + 1)
        except redis.RedisError as exc:
            self._backoff.failed()
            logger.warning("rate limiter unavailable, letting requests through", extra={"error": str(exc)})
            return Decision(True, limit, limit, window, degraded=True)
        reset_after = max(1, int((window_index + 1) * window - now + 0.999))
        return Decision(count <= limit, limit, max(0, limit - count), reset_after)
