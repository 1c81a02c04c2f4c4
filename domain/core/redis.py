"""The Redis client used for rate limits, caching and (later) pub/sub."""

from __future__ import annotations

import time

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from domain.core.config import Settings

# Seconds: Redis answers in microseconds; anything slower means it is unreachable.
SOCKET_TIMEOUT = 1.0


def create_redis(settings: Settings, max_connections: int = 50) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        settings.require_redis_url(),
        max_connections=max_connections,
        timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        health_check_interval=30,
        # One quick retry: a restarted Redis is picked up, a dead one fails fast (no 8 s of backoff).
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
    )
    return redis.Redis(connection_pool=pool)


class OutageBackoff:
    """Remembers a Redis failure for a moment, so optional Redis work is skipped meanwhile.

    Used where Redis is an optimisation (rate limits, caches): without it every request
    would first pay a failed connection attempt while Redis is down.
    """

    def __init__(self, seconds: float = 2.0) -> None:
        self.seconds = seconds
        self._until = 0.0

    @property
    def active(self) -> bool:
        return time.monotonic() < self._until

    def failed(self) -> None:
        self._until = time.monotonic() + self.seconds
