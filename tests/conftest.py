"""Shared fixtures: real PostgreSQL and Redis, one database per xdist worker.

With DATABASE_URL / REDIS_URL set (CI sets them for the machine's servers) the tests use
those servers; otherwise they start an embedded PostgreSQL and Redis under var/test/.
Each test runs inside a transaction that is rolled back (the app's commits only release
savepoints), and gets a Redis database flushed before it starts.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import falcon.testing
import psycopg
import pytest
import redis
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from domain.core import migrate
from domain.core.config import PROJECT_ROOT, Settings, load_settings
from domain.core.crypto import KeyRing
from domain.core.db import Database
from domain.core.embedded import EmbeddedPostgres, EmbeddedRedis
from domain.core.encrypted import install_keyring
from ingress.app import create_app

# The local SMTP and Twilio-style servers as fixtures (`smtp_sink`, `fake_twilio`).
pytest_plugins = ["tests.fakes"]

TEST_VAR = PROJECT_ROOT / "var" / "test"
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Servers:
    database_url: str
    redis_url: str


def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "gw0")


def worker_number() -> int:
    return int(worker_id().removeprefix("gw") or 0)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if not database_url:
        postgres = EmbeddedPostgres(TEST_VAR / "postgres")
        started.append(postgres)
        database_url = postgres.start()
    if not redis_url:
        embedded_redis = EmbeddedRedis(TEST_VAR / f"redis-{worker_id()}")
        started.append(embedded_redis)
        redis_url = embedded_redis.start()
    # As `deepref run` does: code that reads the environment (the Celery app) finds them too.
    os.environ.setdefault("DATABASE_URL", database_url)
    os.environ.setdefault("REDIS_URL", redis_url)
    yield Servers(database_url, redis_url)
    for server in reversed(started):
        server.stop()


def create_database(base_url: str, name: str) -> str:
    """(Re)create database `name` on the server of `base_url`; return its SQLAlchemy URL."""
    url = make_url(base_url).set(drivername="postgresql+psycopg")
    admin_dsn = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def make_settings(database_url: str, redis_url: str, var_dir: Path, **overrides: str) -> Settings:
    env = {
        "DEEPREF_ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "DEEPREF_VAR_DIR": str(var_dir),
        **overrides,
    }
    return load_settings(env)


def redis_db_url(base: str, number: int) -> str:
    return urlunsplit(urlsplit(base)._replace(path=f"/{number}"))


@pytest.fixture(scope="session")
def settings(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    database_url = create_database(servers.database_url, f"deepref_test_{worker_id()}")
    redis_url = redis_db_url(servers.redis_url, 1 + worker_number() % 14)
    return make_settings(database_url, redis_url, tmp_path_factory.mktemp("var"))


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_engine(settings.require_database_url())
    with engine.begin() as connection:
        migrate.upgrade(connection)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        outer = connection.begin()
        yield connection
        outer.rollback()


@pytest.fixture
def database(connection: Connection) -> Database:
    return Database(connection)


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.require_redis_url())
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def keyring(settings: Settings) -> KeyRing:
    ring = KeyRing(settings.master_key)
    install_keyring(ring)
    return ring


@pytest.fixture
def app(settings: Settings, database: Database, redis_client: redis.Redis) -> Any:
    return create_app(settings, database=database, redis_client=redis_client)


@pytest.fixture
def client(app: Any) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(app)


@dataclass
class Account:
    id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def register(client: falcon.testing.TestClient, role: str = "job_seeker", email: str | None = None) -> Account:
    email = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
    result = client.simulate_post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "role": role, "name": "Test User"}
    )
    assert result.status_code == 201, result.text
    body = result.json
    return Account(body["user"]["id"], email, body["accessToken"], body["refreshToken"])


@pytest.fixture
def account(client: falcon.testing.TestClient) -> Account:
    return register(client)


@pytest.fixture
def admin(client: falcon.testing.TestClient, database: Database, settings: Settings, keyring: KeyRing) -> Account:
    """An administrator, created the way `deepref create-admin` does, then logged in."""
    from domain.users import service as users

    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    with database.transaction() as session:
        users.create_admin(session, users.Accounts.from_settings(settings), email=email, password=PASSWORD, name="Ada")
    result = client.simulate_post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert result.status_code == 200, result.text
    return Account(result.json["user"]["id"], email, result.json["accessToken"], result.json["refreshToken"])


def statements_during(connection: Connection, call: Callable[[], object]) -> list[str]:
    """The SQL statements `call` sends on `connection` (the test's savepoints included)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(connection, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(connection, "before_cursor_execute", record)
    return seen


def without_savepoints(statements: list[str]) -> list[str]:
    return [s for s in statements if not s.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
