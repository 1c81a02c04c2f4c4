"""`python -m loadtests.relay_bench`: thousands of SSE streams on one relay process, and broadcast delay.

What is measured
    The relay (gunicorn, realtime/gunicorn.conf.py, one gevent worker) with RELAY_BENCH_USERS
    users x RELAY_BENCH_PER_USER open streams (500 x 10 = 5,000 by default). Then
    RELAY_BENCH_ROUNDS broadcasts: one event per user, published through EventPublisher with its
    publish time in the data. For each stream, the delay from publish to the event being read;
    per round, the p50/p99/max of those delays and the time until the last stream had it. Also
    the RSS of the relay (master + workers, VmRSS from /proc) before and after the streams are
    open, the streams accepted, and how long a SIGTERM takes to stop the relay with them open.
    Target: 5,000 streams under 300 MB.

How
    PostgreSQL and Redis are DATABASE_URL / REDIS_URL when set (the database
    `deepref_relay_bench` is dropped and created again), else embedded ones under var/bench.
    Users are inserted directly and their access tokens minted with the relay's SECRET_KEY. The
    streams are held by a client subprocess (gevent, raw sockets) on this machine, so client,
    relay and Redis share its cores: the delays include the client's own time to read 5,000
    sockets. The relay's log is var/bench/relay-bench.log.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from domain.core.config import PROJECT_ROOT

VAR = PROJECT_ROOT / "var" / "bench"
DATABASE = "deepref_relay_bench"
HOST = "127.0.0.1"
# Seconds.
ROUND_TIMEOUT = 30.0
CONNECT_TIMEOUT = 120.0
# Streams being opened at once by the client (the rest wait), to stay inside the listen backlog.
OPENING_AT_ONCE = 200


# --- the orchestrator (this process: no gevent) -----------------------------------------------


def run(
    users: int = 500,
    per_user: int = 10,
    rounds: int = 5,
    database_server_url: str | None = None,
    redis_url: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark; return its figures (also printed as a table)."""
    from loadtests.servers import backing_services

    VAR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if database_server_url:
        env["DATABASE_URL"] = database_server_url
    if redis_url:
        env["REDIS_URL"] = redis_url
    with backing_services(env) as (postgres, redis_server):
        result = _measure(postgres, redis_server, users, per_user, rounds)
    print(render(result))
    return result


def _measure(postgres: str, redis_url: str, users: int, per_user: int, rounds: int) -> dict[str, Any]:
    import redis

    from domain.core.events import EventPublisher, stream

    secret_key, master_key = secrets.token_urlsafe(48), secrets.token_bytes(32)
    database_url = _prepare_database(postgres)
    accounts = _create_users(database_url, redis_url, secret_key, master_key, users)
    env = {
        **os.environ,
        "DEEPREF_ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secret_key,
        "MASTER_KEY": base64.b64encode(master_key).decode(),
        "DEEPREF_VAR_DIR": str(VAR / "relay"),
        "RELAY_MAX_CONNECTIONS": str(users * per_user + 100),
        "LOG_LEVEL": "info",
    }
    client = redis.Redis.from_url(redis_url)
    publisher = EventPublisher(client)
    with ExitStack() as stack:
        relay = stack.enter_context(_Relay(env))
        rss_idle = relay.rss_kb()
        cpu_idle = relay.cpu_seconds()
        spec = {"port": relay.port, "tokens": [token for _, token in accounts], "per_user": per_user, "rounds": rounds}
        streams = stack.enter_context(_Client(spec))
        connected = streams.read()
        rss_connected = relay.rss_kb()
        cpu_before = relay.cpu_seconds()
        cpu_opening = cpu_before - cpu_idle
        results = []
        for round_number in range(rounds):
            started = time.time()
            for user_id, _ in accounts:
                publisher.publish(user_id, "bench.broadcast", {"round": round_number, "sentAt": time.time()})
            published = time.time() - started
            delays: list[float] = sorted(streams.read()["delays"])
            results.append(_round(round_number, delays, started, published, connected["accepted"]))
        cpu = relay.cpu_seconds() - cpu_before
        rss_after = relay.rss_kb()
        stop_seconds = relay.stop()
        ended = streams.read()["ended"]
    client.delete(*(stream(user_id) for user_id, _ in accounts))
    all_delays = sorted(d for r in results for d in r.pop("_delays"))
    return {
        "streams": {"requested": users * per_user, **connected},
        "rss_mb": {"idle": rss_idle / 1024, "connected": rss_connected / 1024, "after_rounds": rss_after / 1024},
        "rounds": results,
        "delay_ms": {"p50": _pct(all_delays, 50), "p99": _pct(all_delays, 99), "max": _pct(all_delays, 100)},
        "relay_cpu_seconds_opening": round(cpu_opening, 2),
        "relay_cpu_seconds_during_rounds": round(cpu, 2),
        "sigterm_stop_seconds": round(stop_seconds, 2),
        "streams_ended_by_relay": ended,
        "users": users,
        "per_user": per_user,
    }


def _round(number: int, delays: list[float], started: float, published: float, expected: int) -> dict[str, Any]:
    return {
        "round": number,
        "delivered": len(delays),
        "expected": expected,
        "publish_ms": round(published * 1000, 1),
        "p50_ms": _pct(delays, 50),
        "p99_ms": _pct(delays, 99),
        "max_ms": _pct(delays, 100),
        "_delays": delays,
    }


def _pct(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return round(ordered[index] * 1000, 1)


def _prepare_database(server_url: str) -> str:
    import psycopg
    from psycopg import sql
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from domain.core import migrate

    url = make_url(server_url).set(drivername="postgresql+psycopg")
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    database_url = url.set(database=DATABASE).render_as_string(hide_password=False)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        migrate.upgrade(connection)
    engine.dispose()
    return database_url


def _create_users(
    database_url: str, redis_url: str, secret_key: str, master_key: bytes, count: int
) -> list[tuple[str, str]]:
    """Insert `count` users (no bcrypt: nobody logs in) and mint an access token for each."""
    from domain.core.config import load_settings
    from domain.core.crypto import KeyRing
    from domain.core.db import Database
    from domain.core.encrypted import install_keyring
    from domain.users.models import Role, User
    from domain.users.tokens import AccessTokens

    settings = load_settings(
        {
            "DEEPREF_ENV": "test",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": secret_key,
            "MASTER_KEY": base64.b64encode(master_key).decode(),
            "DEEPREF_VAR_DIR": str(VAR / "relay"),
        }
    )
    keyring = KeyRing(master_key)
    install_keyring(keyring)
    tokens = AccessTokens(secret_key, settings.jwt_issuer, settings.jwt_audience, 3600)
    database = Database.from_settings(settings)
    created = []
    with database.transaction() as session:
        for index in range(count):
            email = f"relay-bench-{index}@example.com"
            user = User(email_index=keyring.email_index(email), email=email, name="Bench", role=Role.JOB_SEEKER)
            user.password_hash = "!"  # no password: these accounts cannot log in
            session.add(user)
            created.append(user.id)
    database.dispose()
    return [(str(user_id), tokens.issue(user_id)) for user_id in created]


class _Relay:
    """The relay under gunicorn, in its own session; stopped with SIGTERM."""

    def __init__(self, env: Mapping[str, str]) -> None:
        from domain.core.embedded import free_port

        self.env = env
        self.port = free_port()

    def __enter__(self) -> _Relay:
        conf = PROJECT_ROOT / "realtime" / "gunicorn.conf.py"
        command = [sys.executable, "-m", "gunicorn", "-c", str(conf), "--bind", f"{HOST}:{self.port}"]
        with (VAR / "relay-bench.log").open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "realtime.app:app"],
                env=dict(self.env),
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the relay did not start; see {VAR / 'relay-bench.log'}")
            time.sleep(0.1)
        return self

    def _healthy(self) -> bool:
        import http.client

        connection = http.client.HTTPConnection(HOST, self.port, timeout=1)
        with suppress(OSError, http.client.HTTPException):
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        return False

    def pids(self) -> list[int]:
        from loadtests.servers import children_of

        return [self.process.pid, *children_of(self.process.pid)]

    def rss_kb(self) -> int:
        total = 0
        for pid in self.pids():
            with suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return total

    def cpu_seconds(self) -> float:
        from loadtests.servers import cpu_seconds

        return cpu_seconds(self.pids())

    def stop(self) -> float:
        """SIGTERM with every stream open; the seconds until the relay exited."""
        started = time.monotonic()
        self.process.terminate()
        self.process.wait(30)
        return time.monotonic() - started

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


class _Client:
    """The client subprocess holding the streams; it answers one JSON line per step."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def __enter__(self) -> _Client:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loadtests.relay_bench", "--client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=PROJECT_ROOT,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.spec).encode())
        self.process.stdin.close()
        return self

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the stream client exited early")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)


def render(result: dict[str, Any]) -> str:
    streams, rss = result["streams"], result["rss_mb"]
    lines = [
        f"relay: {streams['accepted']}/{streams['requested']} streams accepted "
        f"({result['users']} users x {result['per_user']}), {streams['failed']} failed, "
        f"opened in {streams['seconds']:.1f} s",
        f"relay RSS (master + worker): {rss['idle']:.0f} MB idle, {rss['connected']:.0f} MB with the streams open, "
        f"{rss['after_rounds']:.0f} MB after the rounds (target < 300 MB)",
        "",
        "| round | delivered | publish (ms) | p50 (ms) | p99 (ms) | max (ms) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rounds"]:
        lines.append(
            f"| {r['round']} | {r['delivered']}/{r['expected']} | {r['publish_ms']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['max_ms']} |"
        )
    delay = result["delay_ms"]
    lines += [
        "",
        f"all rounds: p50 {delay['p50']} ms, p99 {delay['p99']} ms, max {delay['max']} ms "
        "(publish → read by the client, per stream)",
        f"relay CPU: {result['relay_cpu_seconds_opening']} s opening the streams, "
        f"{result['relay_cpu_seconds_during_rounds']} s during the rounds; "
        f"SIGTERM with the streams open: stopped in {result['sigterm_stop_seconds']} s, "
        f"{result['streams_ended_by_relay']} streams ended by the relay",
    ]
    return "\n".join(lines)


# --- the client (a subprocess: gevent sockets) -----------------------------------------------


class _Tally:
    """What the client's streams saw: opens, and each round's delays."""

    def __init__(self, expected: int, rounds: int) -> None:
        import gevent.event  # type: ignore[import-untyped]

        self.expected = expected
        self.accepted = 0
        self.failed = 0
        self.all_open = gevent.event.Event()
        self.delays: list[list[float]] = [[] for _ in range(rounds)]
        self.round_done = [gevent.event.Event() for _ in range(rounds)]
        self.ended = 0
        self.all_ended = gevent.event.Event()

    def opened(self, ok: bool) -> None:
        if ok:
            self.accepted += 1
        else:
            self.failed += 1
        if self.accepted + self.failed == self.expected:
            self.all_open.set()

    def closed_by_relay(self) -> None:
        self.ended += 1
        if self.ended == self.accepted:
            self.all_ended.set()

    def received(self, round_number: int, delay: float) -> None:
        self.delays[round_number].append(delay)
        if len(self.delays[round_number]) >= self.accepted:
            self.round_done[round_number].set()


def _hold_stream(port: int, token: str, gate: Any, tally: _Tally) -> None:
    """Open one stream and record the delay of each broadcast it reads, until the relay closes it."""
    import gevent.socket  # type: ignore[import-untyped]

    request = f"GET /events HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    with gate:
        try:
            sock = gevent.socket.create_connection((HOST, port), timeout=CONNECT_TIMEOUT)
            sock.sendall(request)
            buffer = b""
            while b"\r\n\r\n" not in buffer and (chunk := sock.recv(65536)):
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            ok = head.startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
    tally.opened(ok)
    if not ok:
        return
    sock.settimeout(None)
    with sock, suppress(OSError):
        # Chunk-size lines interleave with the event lines; only `data:` lines matter here.
        while True:
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"data: "):
                    data = json.loads(line[6:])
                    tally.received(data["round"], time.time() - data["sentAt"])
            chunk = sock.recv(65536)
            if not chunk:
                tally.closed_by_relay()
                return
            buffer += chunk


def client_main() -> int:
    """Open the streams, then report the opens and each round's delays as JSON lines on stdout."""
    import gevent
    import gevent.lock  # type: ignore[import-untyped]

    from realtime.server import raise_open_file_limit

    raise_open_file_limit()
    spec = json.loads(sys.stdin.read())
    # User after user, as independent clients arrive (not ten streams of one user at once).
    tokens = [token for _ in range(spec["per_user"]) for token in spec["tokens"]]
    tally = _Tally(len(tokens), spec["rounds"])
    gate = gevent.lock.BoundedSemaphore(OPENING_AT_ONCE)
    started = time.monotonic()
    for token in tokens:
        gevent.spawn(_hold_stream, spec["port"], token, gate, tally)
    tally.all_open.wait(CONNECT_TIMEOUT)
    opened = {"accepted": tally.accepted, "failed": tally.failed, "seconds": time.monotonic() - started}
    print(json.dumps(opened), flush=True)
    for done, delays in zip(tally.round_done, tally.delays, strict=True):
        done.wait(ROUND_TIMEOUT)
        print(json.dumps({"delays": delays}), flush=True)
    # Hold every stream until the relay, stopped with SIGTERM, ends them itself.
    tally.all_ended.wait(ROUND_TIMEOUT)
    print(json.dumps({"ended": tally.ended}), flush=True)
    return 0


def main() -> int:
    if "--client" in sys.argv[1:]:
        return client_main()
    result = run(
        users=int(os.environ.get("RELAY_BENCH_USERS", "500")),
        per_user=int(os.environ.get("RELAY_BENCH_PER_USER", "10")),
        rounds=int(os.environ.get("RELAY_BENCH_ROUNDS", "5")),
    )
    (VAR / "relay-results.json").write_text(json.dumps(result, indent=2))
    return 0 if result["streams"]["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
