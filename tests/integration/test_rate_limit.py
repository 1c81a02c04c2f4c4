"""Rate limits counted in Redis: per client and route, and stricter on login."""

import time

import falcon.testing
import pytest

from domain.core.ratelimit import RateLimiter
from domain.core.redis import create_redis
from ingress.app import create_app
from tests.conftest import PASSWORD, register

UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture
def limited_client(settings, database, redis_client):
    tight = settings.model_copy(update={"rate_limit_per_minute": 3, "login_rate_limit_per_minute": 2})
    return falcon.testing.TestClient(create_app(tight, database=database, redis_client=redis_client))


def test_per_client_route_limit_gives_429_with_retry_after(limited_client):
    account = register(limited_client)
    statuses = [limited_client.simulate_get("/api/v1/users/me", headers=account.auth) for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    limited = statuses[-1]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json["statusCode"] == 429 and limited.json["error"] == "Too Many Requests"
    assert statuses[0].headers["RateLimit-Remaining"] == "2"
    # Another user has their own budget on the same route.
    other = register(limited_client)
    assert limited_client.simulate_get("/api/v1/users/me", headers=other.auth).status_code == 200


def test_login_is_limited_per_email_and_per_ip(limited_client):
    register(limited_client, email="ann@example.com")
    body = {"email": "ann@example.com", "password": "wrong password!"}
    results = [limited_client.simulate_post("/api/v1/auth/login", json=body) for _ in range(3)]
    assert [r.status_code for r in results] == [401, 401, 429]
    # Even the right password is refused until the window passes.
    right = limited_client.simulate_post("/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert right.status_code == 429
    # Per IP: a different email from the same address is also throttled.
    other = limited_client.simulate_post("/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
    assert other.status_code == 429


def test_login_per_email_limit_holds_across_addresses(limited_client):
    register(limited_client, email="ann@example.com")
    body = {"email": "ann@example.com", "password": "wrong password!"}
    for address in ("198.51.100.1", "198.51.100.2"):
        limited_client.simulate_post(
            "/api/v1/auth/login", json=body, remote_addr="127.0.0.1", headers={"X-Forwarded-For": address}
        )
    third = limited_client.simulate_post(
        "/api/v1/auth/login", json=body, remote_addr="127.0.0.1", headers={"X-Forwarded-For": "198.51.100.3"}
    )
    assert third.status_code == 429


def test_limiter_lets_requests_through_when_redis_is_down(settings, database):
    tight = settings.model_copy(update={"rate_limit_per_minute": 1, "redis_url": UNREACHABLE})
    client = falcon.testing.TestClient(create_app(tight, database=database))
    before = _degraded_count(client)
    started = time.monotonic()
    results = [client.simulate_get("/api/v1/users/me") for _ in range(3)]
    assert time.monotonic() - started < 2
    assert [r.status_code for r in results] == [401, 401, 401]  # not 429, not 503
    assert _degraded_count(client) >= before + 3
    assert client.simulate_get("/readyz").status_code == 503


def _degraded_count(client):
    for line in client.simulate_get("/metrics").text.splitlines():
        if line.startswith("deepref_rate_limiter_unavailable_total "):
            return float(line.split()[1])
    return 0.0


def test_limiter_backs_off_after_a_failure_then_recovers(settings, redis_client):
    limiter = RateLimiter(create_redis(settings.model_copy(update={"redis_url": UNREACHABLE})))
    assert limiter.hit("b", "s", 1).degraded
    assert limiter.hit("b", "s", 1).degraded  # skipped without trying again
    healthy = RateLimiter(redis_client)
    assert healthy.hit("b", "s", 1).allowed and not healthy.hit("b", "s", 1).allowed
