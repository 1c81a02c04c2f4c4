"""The processes `make bench` starts and what it reads from them.

The gunicorn servers (the ingress and the bare app) with their environments, PostgreSQL and Redis
(the environment's or embedded ones), the accounts registered on the ingress, and the CPU time and
peak RSS read from /proc.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from domain.core.config import PROJECT_ROOT, load_settings
from domain.core.db import create_db_engine
from domain.core.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

if TYPE_CHECKING:
    from loadtests.bench import Config

VAR = PROJECT_ROOT / "var" / "bench"
GUNICORN_CONF = PROJECT_ROOT / "ingress" / "gunicorn.conf.py"
BENCH_DATABASE = "deepref_bench"
HOST = "127.0.0.1"
API = "/api/v1"

BCRYPT_ROUNDS = 4
UNLIMITED_RATE = "100000000"
PASSWORD = "bench-password-2024"

# Seconds.
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
MIGRATE_TIMEOUT = 180.0
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Account:
    access_token: str
    refresh_token: str


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far: by the whole machine, by the server's workers, by this process's reaped children."""

    at: float
    machine: float
    workers: float
    children: float

    @classmethod
    def take(cls, workers: Sequence[int]) -> CpuSample:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            time.monotonic(), machine_busy_seconds(), cpu_seconds(workers), children.ru_utime + children.ru_stime
        )


# --- PostgreSQL and Redis ---------------------------------------------------------------------


@contextmanager
def backing_services(env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """Yield (PostgreSQL server URL, Redis URL): the environment's, else embedded servers."""
    with ExitStack() as stack:
        postgres = env.get("DATABASE_URL") or stack.enter_context(EmbeddedPostgres(VAR / "postgres"))
        redis_url = env.get("REDIS_URL") or stack.enter_context(EmbeddedRedis(VAR / "redis"))
        yield postgres, redis_url


def prepare_database(server_url: str) -> str:
    """Drop and create the bench database on the server of `server_url`; return its URL."""
    url = make_url(server_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        name = sql.Identifier(BENCH_DATABASE)
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(name))
    return url.set(database=BENCH_DATABASE).render_as_string(hide_password=False)


def describe_pool(env: Mapping[str, str]) -> str:
    """The database pool an ingress worker gets, read from the engine it would build (nothing connects)."""
    engine = create_db_engine(load_settings(env))
    try:
        pool = engine.pool
        if isinstance(pool, QueuePool):
            return f"{pool.size()} + {pool._max_overflow} overflow, {pool.timeout():g} s checkout timeout"
        return type(pool).__name__
    finally:
        engine.dispose()


def migrate(env: Mapping[str, str]) -> None:
    deepref = Path(sys.executable).with_name("deepref")
    subprocess.run([str(deepref), "migrate"], env=dict(env), cwd=PROJECT_ROOT, check=True, timeout=MIGRATE_TIMEOUT)


# --- the servers ------------------------------------------------------------------------------


def ingress_env(base: Mapping[str, str], database_url: str, redis_url: str, config: Config) -> dict[str, str]:
    return {
        **base,
        "DEEPREF_ENV": "development",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "DEEPREF_VAR_DIR": str(VAR / "ingress"),
        "RATE_LIMIT_PER_MINUTE": UNLIMITED_RATE,
        "LOGIN_RATE_LIMIT_PER_MINUTE": UNLIMITED_RATE,
        "REFEREE_RATE_LIMIT_PER_MINUTE": UNLIMITED_RATE,
        # Links to referees are read back from the file outbox; verification is the local provider's.
        "SMTP_URL": "",
        "AI_PROVIDER": "local",
        "BCRYPT_ROUNDS": str(BCRYPT_ROUNDS),
        "DB_POOL_SIZE": str(config.db_pool_size),
        # The access log stays on, as in production: its cost is part of what is measured.
        "LOG_LEVEL": "info",
        "WEB_CONCURRENCY": str(config.workers),
    }


def bare_env(base: Mapping[str, str], config: Config) -> dict[str, str]:
    return {**base, "LOG_LEVEL": "warning", "WEB_CONCURRENCY": str(config.workers)}


class Server:
    """A gunicorn master in its own session, its output in <log_dir>/<name>.log (var/bench by default)."""

    def __init__(self, name: str, target: str, env: Mapping[str, str], log_dir: Path = VAR) -> None:
        self.name = name
        self.port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"{name}.log"
        command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", f"{HOST}:{self.port}", target]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=dict(env), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, path: str) -> None:
        """Poll `path` until it answers 200; raise when the server exits or READY_TIMEOUT passes."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log}")
            with suppress(OSError, http.client.HTTPException):
                if request(self.port, "GET", path, timeout=1.0)[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer 200 on {path} within {READY_TIMEOUT:.0f} s; see {self.log}")

    def worker_pids(self) -> list[int]:
        return children_of(self.process.pid)

    def stop(self) -> None:
        """SIGTERM (gunicorn's graceful stop); SIGKILL to the master and its workers if that takes too long."""
        if self.process.poll() is not None:
            return
        workers = self.worker_pids()
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            for pid in workers:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@contextmanager
def served(name: str, target: str, env: Mapping[str, str], ready_path: str, log_dir: Path = VAR) -> Iterator[Server]:
    server = Server(name, target, env, log_dir)
    try:
        server.wait_ready(ready_path)
        yield server
    finally:
        server.stop()


def children_of(parent: int) -> list[int]:
    """Pids whose parent is `parent`, from /proc/<pid>/stat."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy: /proc/stat's user to steal columns but idle and iowait."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(value) for value in Path("/proc/stat").read_text().split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of `pids` so far (utime and stime of /proc/<pid>/stat)."""
    ticks = 0
    for pid in pids:
        with suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise ValueError(f"no VmHWM for {pid}")


# --- HTTP from this process (readiness, registration) -----------------------------------------


def request(
    port: int,
    method: str,
    path: str,
    body: object = None,
    timeout: float = REQUEST_TIMEOUT,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body)
        sent = {**({} if body is None else {"Content-Type": "application/json"}), **(headers or {})}
        connection.request(method, path, body=payload, headers=sent)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def register_accounts(port: int, count: int, prefix: str = "bench") -> list[Account]:
    """`count` job seekers (one per virtual client, say), registered one after the other."""
    accounts = []
    for index in range(count):
        body = {"email": f"{prefix}-{index}@example.com", "password": PASSWORD, "role": "job_seeker", "name": "Bench"}
        status, payload = request(port, "POST", f"{API}/auth/register", body)
        if status != 201:
            raise RuntimeError(f"registration answered {status}: {payload[:300]!r}")
        tokens = json.loads(payload)
        accounts.append(Account(tokens["accessToken"], tokens["refreshToken"]))
    return accounts
