"""PostgreSQL or Redis going away and coming back, with servers this test owns."""

import time

import falcon.testing
import pytest
from pgserver._commands import pg_ctl

from domain.core import migrate
from domain.core.db import Database
from domain.core.embedded import EmbeddedPostgres, EmbeddedRedis
from ingress.app import create_app
from tests.conftest import TEST_VAR, register, worker_id

ME = "/api/v1/users/me"


@pytest.fixture
def own_postgres():
    postgres = EmbeddedPostgres(TEST_VAR / f"pg-outage-{worker_id()}")
    url = postgres.start()
    yield postgres, url
    postgres.stop()


def _stop(postgres):
    pg_ctl(["-m", "fast", "-w", "stop"], pgdata=postgres.server.pgdata, user=postgres.server.system_user)


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_postgres_outage_is_a_quick_503_and_recovers_by_itself(own_postgres, settings, redis_client):
    postgres, url = own_postgres
    database = Database.from_settings(settings.model_copy(update={"database_url": url}))
    with database.transaction() as session:
        migrate.upgrade(session.connection())
    client = falcon.testing.TestClient(create_app(settings, database=database, redis_client=redis_client))
    account = register(client)
    assert client.simulate_get(ME, headers=account.auth).status_code == 200

    _stop(postgres)
    # Reads of the caller's own account come from the user cache and keep working...
    assert client.simulate_get(ME, headers=account.auth).status_code == 200
    # ...anything that needs PostgreSQL is a quick 503.
    change = {"name": "Renamed"}
    result, elapsed = _timed(lambda: client.simulate_patch(ME, json=change, headers=account.auth))
    assert result.status_code == 503 and elapsed < 2
    assert result.json["statusCode"] == 503 and result.headers["Retry-After"]
    ready, elapsed = _timed(lambda: client.simulate_get("/readyz"))
    assert ready.status_code == 503 and elapsed < 2
    assert {"field": "postgres", "message": "unavailable"} in ready.json["details"]
    assert client.simulate_get("/healthz").status_code == 200
    login = client.simulate_post("/api/v1/auth/login", json={"email": account.email, "password": "x" * 12})
    assert login.status_code == 503

    postgres.server.ensure_postgres_running()
    assert client.simulate_patch(ME, json=change, headers=account.auth).json["name"] == "Renamed"
    assert client.simulate_get(ME, headers=account.auth).json["name"] == "Renamed"
    assert client.simulate_get("/readyz").status_code == 200
    database.dispose()


def test_redis_outage_keeps_the_api_up_and_recovers(settings, database):
    embedded = EmbeddedRedis(TEST_VAR / f"redis-outage-{worker_id()}")
    url = embedded.start()
    try:
        client = falcon.testing.TestClient(
            create_app(settings.model_copy(update={"redis_url": url}), database=database)
        )
        account = register(client)
        assert "RateLimit-Limit" in client.simulate_get(ME, headers=account.auth).headers

        embedded.stop()
        result, elapsed = _timed(lambda: client.simulate_get(ME, headers=account.auth))
        assert result.status_code == 200 and elapsed < 2  # the limiter fails open
        ready, elapsed = _timed(lambda: client.simulate_get("/readyz"))
        assert ready.status_code == 503 and elapsed < 2
        assert {"field": "redis", "message": "unavailable"} in ready.json["details"]

        embedded.start()
        time.sleep(2.1)  # the limiter's back-off after a failure
        assert "RateLimit-Limit" in client.simulate_get(ME, headers=account.auth).headers
        assert client.simulate_get("/readyz").status_code == 200
    finally:
        embedded.stop()
