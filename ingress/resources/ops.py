"""Operational endpoints: liveness, readiness, metrics."""

from __future__ import annotations

import falcon
import redis
from sqlalchemy.exc import SQLAlchemyError

from ingress import metrics
from ingress.context import ApiRequest, Services
from ingress.endpoint import endpoint
from ingress.errors import write_error
from ingress.schemas.common import Health

TAG = "ops"


class Healthz:
    """The process is up; says nothing about its dependencies (that is /readyz)."""

    rate_limited = False

    @endpoint("Liveness: the process answers", tag=TAG, auth=False, response=Health)
    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        resp.media = {"status": "ok", "checks": {}}


class Readyz:
    """Ready to serve: PostgreSQL and Redis answer within about a second each."""

    rate_limited = False

    def __init__(self, services: Services) -> None:
        self.services = services

    @endpoint("Readiness: PostgreSQL and Redis reachable", tag=TAG, auth=False, response=Health, errors=(503,))
    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        checks = {"postgres": self._postgres(), "redis": self._redis()}
        if all(state == "ok" for state in checks.values()):
            resp.media = {"status": "ok", "checks": checks}
            return
        details = [{"field": name, "message": state} for name, state in checks.items()]
        resp.set_header("Retry-After", "2")
        write_error(req, resp, 503, "not ready: a backing service is unavailable", details)

    def _postgres(self) -> str:
        try:
            self.services.database.ping()
        except SQLAlchemyError:
            return "unavailable"
        return "ok"

    def _redis(self) -> str:
        try:
            self.services.redis.ping()
        except redis.RedisError:
            return "unavailable"
        return "ok"


class Metrics:
    rate_limited = False

    def __init__(self, services: Services) -> None:
        """Serve the metrics, with the Celery queues' lengths when the broker is Redis."""
        broker_url = services.settings.effective_broker_url or ""
        self.broker: redis.Redis | None = None
        if broker_url == services.settings.redis_url:
            self.broker = services.redis
        elif broker_url.startswith(("redis://", "rediss://")):
            self.broker = redis.Redis.from_url(broker_url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        resp.data, resp.content_type = metrics.render(self.broker)
