"""The SSE relay as it runs: gunicorn + gevent, real PostgreSQL and Redis, read over HTTP."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import create_engine

from domain.core import events, migrate
from domain.core.config import PROJECT_ROOT, Settings
from domain.core.crypto import KeyRing
from domain.core.db import Database
from domain.core.embedded import EmbeddedRedis, free_port
from domain.core.encrypted import current_keyring, install_keyring
from domain.users import service as users
from domain.users.cache import UserCache, track_user_changes
from domain.users.models import Role, User, UserStatus
from tests.conftest import PASSWORD, Servers, create_database, make_settings, redis_db_url, worker_id, worker_number

pytestmark = pytest.mark.e2e
GUNICORN_CONF = PROJECT_ROOT / "realtime" / "gunicorn.conf.py"
ORIGIN = "https://app.deepref.test"


@dataclass
class Relay:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthz(self) -> dict[str, Any]:
        body: dict[str, Any] = requests.get(f"{self.base}/healthz", timeout=5).json()
        return body

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(30)


@dataclass
class System:
    settings: Settings
    database: Database
    redis_url: str
    tmp: Path

    def env(self, redis_url: str | None = None, **overrides: str) -> dict[str, str]:
        return {
            **os.environ,
            "DEEPREF_ENV": "test",
            "DATABASE_URL": self.settings.require_database_url(),
            "REDIS_URL": redis_url or self.redis_url,
            "SECRET_KEY": self.settings.secret_key,
            "MASTER_KEY": base64.b64encode(self.settings.master_key).decode(),
            "DEEPREF_VAR_DIR": str(self.tmp),
            "ALLOWED_ORIGINS": ORIGIN,
            "RELAY_HEARTBEAT_SECONDS": "0.3",
            "LOG_LEVEL": "warning",
            **overrides,
        }

    def start_relay(self, redis_url: str | None = None, **overrides: str) -> Relay:
        port = free_port()
        log = self.tmp / f"relay-{port}.log"
        command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", f"127.0.0.1:{port}"]
        with log.open("wb") as output:
            process = subprocess.Popen(
                [*command, "realtime.app:app"],
                env=self.env(redis_url, **overrides),
                cwd=PROJECT_ROOT,
                stdout=output,
                stderr=output,
            )
        relay = Relay(process, port, log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                relay.healthz()
                return relay
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("relay did not start")

    def user(self, status: UserStatus = UserStatus.ACTIVE) -> tuple[str, str]:
        """A new user's id and access token."""
        accounts = users.Accounts.from_settings(self.settings)
        with own_keyring(self.settings), self.database.transaction() as session:
            email = f"relay-{uuid.uuid4().hex[:10]}@example.com"
            user, tokens = users.register(
                session, accounts, email=email, password=PASSWORD, role=Role.JOB_SEEKER, name="Rey"
            )
            user.status = status
        return str(user.id), tokens.access_token


@contextmanager
def own_keyring(settings: Settings) -> Iterator[None]:
    """Encrypt with the relay's master key, then give the process its previous keyring back."""
    try:
        previous: KeyRing | None = current_keyring()
    except RuntimeError:
        previous = None
    install_keyring(KeyRing(settings.master_key))
    try:
        yield
    finally:
        if previous is not None:
            install_keyring(previous)


@pytest.fixture(scope="module")
def system(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    database_url = create_database(servers.database_url, f"deepref_relay_{worker_id()}")
    redis_url = redis_db_url(servers.redis_url, 1 + worker_number() % 14)
    tmp = tmp_path_factory.mktemp("relay")
    settings = make_settings(database_url, redis_url, tmp)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        migrate.upgrade(connection)
    yield System(settings, Database(engine), redis_url, tmp)
    engine.dispose()


@pytest.fixture(scope="module")
def relay(system: System) -> Iterator[Relay]:
    started = system.start_relay(RELAY_MAX_CONNECTIONS="50")
    yield started
    assert started.stop() == 0


@pytest.fixture
def publisher(system: System) -> Iterator[events.EventPublisher]:
    client = redis.Redis.from_url(system.redis_url)
    yield events.EventPublisher(client)
    client.close()


class Stream:
    """An open SSE response, read frame by frame."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self._chunks = response.iter_content(chunk_size=None)
        self._buffer = b""

    def frame(self) -> str:
        while b"\n\n" not in self._buffer:
            self._buffer += next(self._chunks)
        frame, self._buffer = self._buffer.split(b"\n\n", 1)
        return frame.decode()

    def event(self, timeout: float = 10) -> dict[str, str]:
        """The next event (comments and the retry line are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fields = dict(line.split(": ", 1) for line in self.frame().splitlines() if not line.startswith(":"))
            if "id" in fields:
                return fields
        raise AssertionError("no event arrived")

    def ended(self) -> bool:
        """Read to the end of the response; True if the server ended it (rather than timing out)."""
        try:
            for _ in self._chunks:
                pass
        except requests.RequestException:
            return False
        return True

    def close(self) -> None:
        self.response.close()


def stream_ids_until(stream: Stream, wanted: str) -> list[str]:
    ids = [stream.event()["id"]]
    while ids[-1] != wanted:
        ids.append(stream.event()["id"])
    return ids


def open_stream(relay: Relay, headers: dict[str, str] | None = None, **params: str) -> requests.Response:
    return requests.get(f"{relay.base}/events", headers=headers, params=params, stream=True, timeout=(5, 5))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def streams() -> Iterator[list[Stream]]:
    opened: list[Stream] = []
    yield opened
    for stream in opened:
        stream.close()


def connect(relay: Relay, streams: list[Stream], headers: dict[str, str] | None = None, **params: str) -> Stream:
    response = open_stream(relay, headers, **params)
    assert response.status_code == 200, response.text
    stream = Stream(response)
    streams.append(stream)
    assert stream.frame() == "retry: 3000\n: stream open"
    return stream


def test_a_user_gets_their_own_events_and_nobody_else_s(relay, system, publisher, streams):
    alice, alice_token = system.user()
    bob, bob_token = system.user()
    alice_stream = connect(relay, streams, bearer(alice_token) | {"Origin": ORIGIN})
    bob_stream = connect(relay, streams, bearer(bob_token))
    headers = alice_stream.response.headers
    assert headers["Content-Type"] == "text/event-stream"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Accel-Buffering"] == "no"
    assert headers["X-Request-Id"]
    assert headers["Access-Control-Allow-Origin"] == ORIGIN

    for_bob = publisher.publish(bob, "reference.updated", {"reference": "bob's"})
    for_alice = publisher.publish(alice, "operation.updated", {"operation": "alice's", "status": "succeeded"})

    received = alice_stream.event()
    assert received == {"id": for_alice, "event": "operation.updated", "data": received["data"]}
    assert json.loads(received["data"]) == {"operation": "alice's", "status": "succeeded"}
    assert bob_stream.event()["id"] == for_bob
    # Bob's stream carries Bob's event only: the next thing on it is a heartbeat.
    assert bob_stream.frame() == ": heartbeat"


def test_last_event_id_replays_what_was_missed_then_streams_live(relay, system, publisher, streams):
    user, token = system.user()
    seen = publisher.publish(user, "operation.updated", {"n": 1})
    missed = [publisher.publish(user, "operation.updated", {"n": n}) for n in (2, 3)]

    stream = connect(relay, streams, bearer(token) | {"Last-Event-ID": str(seen)})
    assert [stream.event()["id"] for _ in missed] == missed
    live = publisher.publish(user, "operation.updated", {"n": 4})
    assert stream.event()["id"] == live

    # Clients without EventSource pass it in the query string.
    query_stream = connect(relay, streams, bearer(token), lastEventId=missed[0])
    assert query_stream.event()["id"] == missed[1]


def test_a_ticket_opens_one_stream_once(relay, system, publisher, streams):
    user, _ = system.user()
    client = redis.Redis.from_url(system.redis_url)
    ticket = events.issue_ticket(client, user)
    stream = connect(relay, streams, ticket=ticket)
    published = publisher.publish(user, "operation.updated", {"via": "ticket"})
    assert stream.event()["id"] == published

    again = open_stream(relay, ticket=ticket)
    assert again.status_code == 401
    assert again.json()["message"] == "ticket is invalid, expired or already used"


def test_heartbeats_keep_an_idle_stream_alive(relay, system, streams):
    _, token = system.user()
    stream = connect(relay, streams, bearer(token))
    started = time.monotonic()
    assert [stream.frame() for _ in range(3)] == [": heartbeat"] * 3
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "authentication required: an Authorization bearer token or a ticket"),
        ({"Authorization": "Basic abc"}, "Authorization must be 'Bearer <access token>'"),
        ({"Authorization": "Bearer not-a-jwt"}, "access token is invalid"),
    ],
)
def test_a_stream_needs_valid_credentials(relay, headers, message):
    response = open_stream(relay, headers | {"X-Request-Id": "req-123"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="deepref"'
    body = response.json()
    assert body.pop("timestamp").endswith("Z")
    assert body == {
        "statusCode": 401,
        "message": message,
        "error": "Unauthorized",
        "path": "/events",
        "requestId": "req-123",
        "details": [],
    }


def test_a_suspended_user_cannot_open_a_stream(relay, system):
    _, token = system.user(UserStatus.SUSPENDED)
    assert open_stream(relay, bearer(token)).status_code == 401


def test_suspending_a_user_ends_their_open_stream(relay, system, streams):
    user_id, token = system.user()
    stream = connect(relay, streams, bearer(token))
    assert stream.frame() == ": heartbeat"
    database = Database(system.database.bind)
    client = redis.Redis.from_url(system.redis_url)
    track_user_changes(database, UserCache(client, system.settings.master_key))
    with own_keyring(system.settings), database.transaction() as session:
        session.get(User, uuid.UUID(user_id)).status = UserStatus.SUSPENDED
    client.close()
    frames = [stream.frame()]
    while frames[-1] == ": heartbeat":
        frames.append(stream.frame())
    assert frames[-1] == 'event: stream.closed\ndata: {"reason":"reauthenticate"}'
    assert stream.ended()


def test_a_malformed_last_event_id_is_a_400(relay, system):
    _, token = system.user()
    response = open_stream(relay, bearer(token) | {"Last-Event-ID": "yesterday"})
    assert response.status_code == 400
    assert response.json()["error"] == "Bad Request"


def test_other_paths_and_methods_are_refused_in_the_envelope(relay):
    missing = requests.get(f"{relay.base}/nowhere", timeout=5)
    assert missing.status_code == 404 and missing.json()["path"] == "/nowhere"
    wrong = requests.post(f"{relay.base}/events", timeout=5)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET, OPTIONS"
    assert wrong.json()["statusCode"] == 405
    health = requests.get(f"{relay.base}/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_cors_preflight_answers_allowed_origins_only(relay):
    asked = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization,last-event-id"}
    allowed = requests.options(f"{relay.base}/events", headers=asked | {"Origin": ORIGIN}, timeout=5)
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Last-Event-ID" in allowed.headers["Access-Control-Allow-Headers"]
    assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]
    other = requests.options(f"{relay.base}/events", headers=asked | {"Origin": "https://evil.test"}, timeout=5)
    assert other.status_code == 204
    assert "Access-Control-Allow-Origin" not in other.headers


def test_a_client_that_stops_reading_is_disconnected(relay, system, publisher):
    user, token = system.user()
    # A client that never reads, with a tiny receive buffer: the relay's writes back up.
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", relay.port))
        client.sendall(f"GET /events HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        while relay.healthz()["streams"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        before = relay.healthz()["streams"]
        payload = {"padding": "x" * 16_000}
        # Enough to fill the kernel's socket buffers, then the client's mailbox.
        while relay.healthz()["streams"] >= before:
            assert time.monotonic() < deadline, "the slow client was not disconnected"
            for _ in range(100):
                publisher.publish(user, "operation.updated", payload)
    publisher.client.delete(events.stream(user))


def test_connections_beyond_the_limit_get_503_and_sigterm_ends_open_streams(system):
    relay = system.start_relay(RELAY_MAX_CONNECTIONS="2")
    opened: list[Stream] = []
    try:
        _, token = system.user()
        first, second = connect(relay, opened, bearer(token)), connect(relay, opened, bearer(token))
        refused = open_stream(relay, bearer(token))
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "2"
        assert refused.json()["statusCode"] == 503

        started = time.monotonic()
        relay.process.send_signal(signal.SIGTERM)
        # Both streams are ended by the relay itself, well before gunicorn's graceful timeout.
        assert first.ended() and second.ended()
        assert relay.process.wait(10) == 0
        assert time.monotonic() - started < 6
    finally:
        for stream in opened:
            stream.close()
        relay.stop(signal.SIGKILL)


def test_the_relay_survives_a_redis_restart(system, publisher, tmp_path):
    embedded = EmbeddedRedis(tmp_path / "redis")
    redis_url = embedded.start()
    relay = system.start_relay(redis_url)
    opened: list[Stream] = []
    try:
        own = events.EventPublisher(redis.Redis.from_url(redis_url))
        user, token = system.user()
        stream = connect(relay, opened, bearer(token))
        before = own.publish(user, "operation.updated", {"n": 1})
        assert stream.event()["id"] == before

        embedded.stop()
        # Bearer tokens are still checked (PostgreSQL) while Redis is down; tickets cannot be.
        during = connect(relay, opened, bearer(token))
        assert open_stream(relay, ticket="whatever").status_code == 503
        assert open_stream(relay, bearer(token) | {"Last-Event-ID": str(before)}).status_code == 503
        embedded.start()

        after = own.publish(user, "operation.updated", {"n": 2})
        assert after is not None
        assert stream.event()["id"] == after
        # A stream opened during the outage may also be given events from just before it opened.
        assert after in stream_ids_until(during, after)
        own.client.close()
    finally:
        for each in opened:
            each.close()
        # SIGINT (Ctrl-C under `make run`) ends the streams too.
        assert relay.stop(signal.SIGINT) == 0
        embedded.stop()
