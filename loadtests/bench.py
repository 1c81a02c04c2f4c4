"""`make bench`: throughput and latency of the ingress beside a bare Falcon app, on this machine.

What is measured
    For GET /healthz, GET /api/v1/users/me (a bearer access token per client) and
    POST /api/v1/auth/refresh (each client rotating its own refresh token), the requests/s and
    the p50/p99 latency of the real ingress, each beside the same traffic against
    `loadtests.bare_app` (GET /hello, POST /echo with the same headers and body). Both apps are
    served the same way in the same run: gunicorn with ingress/gunicorn.conf.py, so the same
    gevent worker class, worker count and keep-alive. The key figure is the ratio
    ingress rps / bare rps: the share of the framework's own throughput the ingress keeps once
    its middleware, access log, PostgreSQL and Redis work are added. Targets: GET /users/me
    keeps >= 30 % of bare throughput; p99 < 100 ms at 100 concurrent connections.
    Also the peak RSS of one ingress worker under that load: the largest VmHWM in
    /proc/<pid>/status among the gunicorn master's children, read after each ingress run; and
    the workers' CPU time per request (utime + stime from /proc/<pid>/stat over the run,
    warm-up included, divided by the requests answered), which, unlike requests/s, hardly
    depends on how much of the two cores the load generator takes. As a noise indicator, the
    cores used during each run by everything but the workers and the load generator (from
    /proc/stat); during a bare run that is other processes only, and a warning is printed when
    they took enough CPU to make the bare figures, and so the ratios, unreliable.

How
    The load comes from `loadtests.loadgen` processes on this machine (gevent +
    geventhttpclient, closed loop): BENCH_CONCURRENCY keep-alive connections split between
    BENCH_GENERATORS processes, all sending to 127.0.0.1. Each run has BENCH_WARMUP seconds of
    unmeasured warm-up, then BENCH_SECONDS measured; each endpoint runs against the bare app,
    then against the ingress. One account per connection is registered before the load, with
    BCRYPT_ROUNDS=4 (registration is not measured). The rate limits are raised so far that the
    limiter still makes its Redis round trip on every request but never refuses one.
    PostgreSQL and Redis are DATABASE_URL / REDIS_URL when set (the database `deepref_bench` is
    dropped and created again on that server; Redis keys are the limiter's, which expire within
    a minute); when unset, embedded servers under var/bench are started and stopped again.

Output
    A markdown table, the peak RSS and the configuration on stdout; the same as JSON in
    var/bench/results.json; the servers' logs in var/bench/*.log. The exit status is 1 when
    any request failed, since such a run's figures are not valid.

Environment: BENCH_SECONDS (10), BENCH_WARMUP (2), BENCH_CONCURRENCY (100), BENCH_GENERATORS
(see DEFAULT_GENERATORS), WEB_CONCURRENCY (2), DB_POOL_SIZE (the settings' default).
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import resource
import runpy
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from domain.core.config import PROJECT_ROOT, Settings, load_settings
from domain.core.db import create_db_engine
from domain.core.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from loadtests.bare_app import ECHO_PATH, HELLO_PATH
from loadtests.loadgen import ClientSpec, Outcome, Plan

VAR = PROJECT_ROOT / "var" / "bench"
GUNICORN_CONF = PROJECT_ROOT / "ingress" / "gunicorn.conf.py"
BENCH_DATABASE = "deepref_bench"
HOST = "127.0.0.1"
API = "/api/v1"

# One generator process measured best against the bare app on a 2-core machine (two: ~20 % fewer rps).
DEFAULT_GENERATORS = 1
BCRYPT_ROUNDS = 4
UNLIMITED_RATE = "100000000"
PASSWORD = "bench-password-2024"

# Seconds.
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
MIGRATE_TIMEOUT = 180.0
REQUEST_TIMEOUT = 10.0
GENERATOR_STARTUP = 1.5  # for generator processes to import and build their clients before start_at
GENERATOR_GRACE = 30.0  # past the end of the window, before a generator is killed

TARGET_RATIO = 0.30
TARGET_RATIO_ENDPOINT = f"GET {API}/users/me"
TARGET_P99_MS = 100.0
TARGET_CONCURRENCY = 100
# Cores used by other processes during a bare run above which its figures are not trustworthy.
NOISY_CORES = 0.25

Credentials = Literal["none", "access", "refresh"]


@dataclass(frozen=True)
class Config:
    seconds: float
    warmup: float
    concurrency: int
    generators: int
    workers: int
    db_pool_size: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        concurrency = int(env.get("BENCH_CONCURRENCY", "100"))
        return cls(
            seconds=float(env.get("BENCH_SECONDS", "10")),
            warmup=float(env.get("BENCH_WARMUP", "2")),
            concurrency=concurrency,
            generators=max(1, min(concurrency, int(env.get("BENCH_GENERATORS", str(DEFAULT_GENERATORS))))),
            workers=int(env.get("WEB_CONCURRENCY", "2")),
            db_pool_size=int(env.get("DB_POOL_SIZE", str(Settings.model_fields["db_pool_size"].default))),
        )


@dataclass(frozen=True)
class Scenario:
    endpoint: str
    method: Literal["GET", "POST"]
    bare_path: str
    ingress_path: str
    credentials: Credentials


SCENARIOS = (
    Scenario("GET /healthz", "GET", HELLO_PATH, "/healthz", "none"),
    Scenario(f"GET {API}/users/me", "GET", HELLO_PATH, f"{API}/users/me", "access"),
    Scenario(f"POST {API}/auth/refresh", "POST", ECHO_PATH, f"{API}/auth/refresh", "refresh"),
)


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


@dataclass(frozen=True)
class Measurement:
    rps: float
    p50_ms: float
    p99_ms: float
    completed: int
    errors: int
    failures: dict[str, int]
    stopped_clients: int
    server_cpu_ms: float
    other_cpu_cores: float

    @classmethod
    def of(cls, outcomes: Sequence[Outcome], seconds: float, before: CpuSample, after: CpuSample) -> Measurement:
        """Merge the generators' outcomes, with the CPU used between two samples around the run."""
        server_cpu = after.workers - before.workers
        other_cpu = (after.machine - before.machine) - server_cpu - (after.children - before.children)
        latencies = sorted(value for outcome in outcomes for value in outcome.latencies_ms)
        failures: dict[str, int] = {}
        for outcome in outcomes:
            for reason, count in outcome.failures.items():
                failures[reason] = failures.get(reason, 0) + count
        return cls(
            rps=len(latencies) / seconds,
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            completed=len(latencies),
            errors=sum(outcome.errors for outcome in outcomes),
            failures=failures,
            stopped_clients=sum(outcome.stopped_clients for outcome in outcomes),
            server_cpu_ms=round(1000 * server_cpu / max(1, sum(outcome.exchanges for outcome in outcomes)), 3),
            other_cpu_cores=round(max(0.0, other_cpu) / max(1e-3, after.at - before.at), 2),
        )


@dataclass(frozen=True)
class Comparison:
    endpoint: str
    bare: Measurement
    ingress: Measurement

    @property
    def ratio(self) -> float:
        return self.ingress.rps / self.bare.rps if self.bare.rps else 0.0


@dataclass
class PeakMemory:
    """The largest VmHWM seen for each ingress worker pid, in kB."""

    idle_kb: int = 0
    peaks_kb: dict[int, int] = field(default_factory=dict)

    def observe(self, pids: Sequence[int]) -> None:
        for pid in pids:
            with suppress(OSError, ValueError):
                self.peaks_kb[pid] = max(self.peaks_kb.get(pid, 0), peak_rss_kb(pid))

    @property
    def peak_mb(self) -> float:
        return max(self.peaks_kb.values(), default=0) / 1024


@dataclass(frozen=True)
class LogSummary:
    requests: int
    server_errors: int
    problems: int
    samples: list[str]


@dataclass(frozen=True)
class Report:
    config: Config
    comparisons: list[Comparison]
    memory: PeakMemory
    workers_seen: int
    ingress_log: LogSummary
    postgres: str
    redis: str
    pool: str
    load_average: float

    @property
    def errors(self) -> int:
        return sum(c.bare.errors + c.ingress.errors for c in self.comparisons)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- PostgreSQL and Redis ---------------------------------------------------------------------


@contextmanager
def embedded_postgres() -> Iterator[str]:
    server = EmbeddedPostgres(VAR / "postgres")
    try:
        yield server.start()
    finally:
        server.stop()


@contextmanager
def embedded_redis() -> Iterator[str]:
    server = EmbeddedRedis(VAR / "redis")
    try:
        yield server.start()
    finally:
        server.stop()


@contextmanager
def backing_services(env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """Yield (PostgreSQL server URL, Redis URL): the environment's, else embedded servers."""
    with ExitStack() as stack:
        postgres = env.get("DATABASE_URL") or stack.enter_context(embedded_postgres())
        redis_url = env.get("REDIS_URL") or stack.enter_context(embedded_redis())
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
        "BCRYPT_ROUNDS": str(BCRYPT_ROUNDS),
        "DB_POOL_SIZE": str(config.db_pool_size),
        "LOG_LEVEL": "warning",
        "WEB_CONCURRENCY": str(config.workers),
    }


def bare_env(base: Mapping[str, str], config: Config) -> dict[str, str]:
    return {**base, "LOG_LEVEL": "warning", "WEB_CONCURRENCY": str(config.workers)}


class Server:
    """A gunicorn master in its own session, its output in var/bench/<name>.log."""

    def __init__(self, name: str, target: str, env: Mapping[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.log = VAR / f"{name}.log"
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
def served(name: str, target: str, env: Mapping[str, str], ready_path: str) -> Iterator[Server]:
    server = Server(name, target, env)
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


def summarise_log(path: Path, sample_count: int = 5) -> LogSummary:
    """Count access-log lines and 5xx answers; keep the first lines that are not plain access lines."""
    requests = server_errors = problems = 0
    samples: list[str] = []
    with path.open(errors="replace") as log:
        for line in log:
            entry = parse_log_line(line)
            if entry.get("logger") == "deepref.access":
                requests += 1
                server_errors += int(entry.get("status", 0)) >= 500
                continue
            problems += 1
            if len(samples) < sample_count:
                samples.append(line.strip()[:300])
    return LogSummary(requests, server_errors, problems, samples)


def parse_log_line(line: str) -> dict[str, Any]:
    with suppress(ValueError):
        entry = json.loads(line)
        if isinstance(entry, dict):
            return entry
    return {}


# --- HTTP from this process (readiness, registration) -----------------------------------------


def request(
    port: int, method: str, path: str, body: object = None, timeout: float = REQUEST_TIMEOUT
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body)
        headers = {} if body is None else {"Content-Type": "application/json"}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def register_accounts(port: int, count: int) -> list[Account]:
    """One account per virtual client, registered one after the other."""
    accounts = []
    for index in range(count):
        body = {"email": f"bench-{index}@example.com", "password": PASSWORD, "role": "job_seeker", "name": "Bench"}
        status, payload = request(port, "POST", f"{API}/auth/register", body)
        if status != 201:
            raise RuntimeError(f"registration answered {status}: {payload[:300]!r}")
        tokens = json.loads(payload)
        accounts.append(Account(tokens["accessToken"], tokens["refreshToken"]))
    return accounts


# --- load -------------------------------------------------------------------------------------


def client_specs(credentials: Credentials, accounts: Sequence[Account]) -> list[ClientSpec]:
    if credentials == "access":
        return [ClientSpec(headers={"Authorization": f"Bearer {a.access_token}"}) for a in accounts]
    if credentials == "refresh":
        json_headers = {"Content-Type": "application/json"}
        return [ClientSpec(headers=json_headers, body=json.dumps({"refreshToken": a.refresh_token})) for a in accounts]
    return [ClientSpec() for _ in accounts]


def run_load(server: Server, path: str, scenario: Scenario, specs: Sequence[ClientSpec], config: Config) -> Measurement:
    """Run one measured load in `config.generators` processes sharing `specs`; merge their outcomes."""
    start_at = time.time() + GENERATOR_STARTUP
    plans = [
        Plan(
            port=server.port,
            method=scenario.method,
            path=path,
            chain_refresh=scenario.credentials == "refresh",
            clients=list(specs[index :: config.generators]),
            start_at=start_at,
            warmup=config.warmup,
            duration=config.seconds,
        )
        for index in range(config.generators)
    ]
    deadline = start_at + config.warmup + config.seconds + GENERATOR_GRACE
    workers = server.worker_pids()
    before = CpuSample.take(workers)
    with ExitStack() as stack:
        processes = [stack.enter_context(generator(plan, index)) for index, plan in enumerate(plans)]
        outcomes = [collect(process, deadline) for process in processes]
    return Measurement.of(outcomes, config.seconds, before, CpuSample.take(workers))


@contextmanager
def generator(plan: Plan, index: int) -> Iterator[subprocess.Popen[bytes]]:
    plan_file = VAR / f"plan-{index}.json"
    plan_file.write_text(plan.model_dump_json())
    command = [sys.executable, "-m", "loadtests.loadgen", str(plan_file)]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        plan_file.unlink(missing_ok=True)


def collect(process: subprocess.Popen[bytes], deadline: float) -> Outcome:
    stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.time()))
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed ({process.returncode}): {stderr.decode(errors='replace')[-2000:]}")
    return Outcome.model_validate_json(stdout)


def compare(
    scenario: Scenario, bare: Server, ingress: Server, accounts: Sequence[Account], config: Config, memory: PeakMemory
) -> Comparison:
    specs = client_specs(scenario.credentials, accounts)
    print(f"bench: {scenario.endpoint} ...", file=sys.stderr, flush=True)
    bare_result = run_load(bare, scenario.bare_path, scenario, specs, config)
    ingress_result = run_load(ingress, scenario.ingress_path, scenario, specs, config)
    memory.observe(ingress.worker_pids())
    return Comparison(scenario.endpoint, bare_result, ingress_result)


# --- the run ----------------------------------------------------------------------------------


def run(config: Config, env: Mapping[str, str]) -> Report:
    load_average = os.getloadavg()[0]
    with backing_services(env) as (postgres_url, redis_url):
        server_env = ingress_env(env, prepare_database(postgres_url), redis_url, config)
        pool = describe_pool(server_env)
        migrate(server_env)
        with (
            served("bare", "loadtests.bare_app:app", bare_env(env, config), HELLO_PATH) as bare,
            served("ingress", "ingress.app:app", server_env, "/readyz") as ingress,
        ):
            memory = PeakMemory()
            memory.observe(ingress.worker_pids())
            memory.idle_kb = max(memory.peaks_kb.values(), default=0)
            accounts = register_accounts(ingress.port, config.concurrency)
            comparisons = [compare(s, bare, ingress, accounts, config, memory) for s in SCENARIOS]
    return Report(
        config=config,
        comparisons=comparisons,
        memory=memory,
        workers_seen=len(memory.peaks_kb),
        ingress_log=summarise_log(ingress.log),
        postgres="DATABASE_URL" if env.get("DATABASE_URL") else "embedded",
        redis="REDIS_URL" if env.get("REDIS_URL") else "embedded",
        pool=pool,
        load_average=load_average,
    )


# --- output -----------------------------------------------------------------------------------


def render(report: Report) -> str:
    lines = [
        "| endpoint | bare rps | ingress rps | ratio | bare p50/p99 ms | ingress p50/p99 ms | errors (bare/ingress) "
        "| server CPU ms/request (bare/ingress) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [table_row(c) for c in report.comparisons]
    lines += ["", *failure_lines(report), *memory_lines(report), *target_lines(report), *cpu_lines(report)]
    lines += config_lines(report)
    return "\n".join(lines)


def table_row(c: Comparison) -> str:
    return (
        f"| {c.endpoint} | {c.bare.rps:.0f} | {c.ingress.rps:.0f} | {c.ratio:.2f} "
        f"| {c.bare.p50_ms:.1f} / {c.bare.p99_ms:.1f} | {c.ingress.p50_ms:.1f} / {c.ingress.p99_ms:.1f} "
        f"| {c.bare.errors} / {c.ingress.errors} | {c.bare.server_cpu_ms:.2f} / {c.ingress.server_cpu_ms:.2f} |"
    )


def failure_lines(report: Report) -> list[str]:
    lines = []
    for c in report.comparisons:
        for side, result in (("bare", c.bare), ("ingress", c.ingress)):
            if result.errors or result.stopped_clients:
                lines.append(
                    f"- errors, {side} {c.endpoint}: {result.failures}; clients stopped early: {result.stopped_clients}"
                )
    log = report.ingress_log
    lines.append(
        f"- ingress log: {log.requests} access lines, {log.server_errors} with status >= 500, "
        f"{log.problems} other lines (var/bench/ingress.log)"
    )
    lines += [f"  - {sample}" for sample in log.samples]
    return lines


def memory_lines(report: Report) -> list[str]:
    memory = report.memory
    return [
        f"- peak RSS of one ingress worker: {memory.peak_mb:.1f} MB (VmHWM, largest of {report.workers_seen} "
        f"worker pids seen; {memory.idle_kb / 1024:.1f} MB when idle after start)"
    ]


def target_lines(report: Report) -> list[str]:
    lines = []
    for c in report.comparisons:
        if c.endpoint == TARGET_RATIO_ENDPOINT:
            verdict = "met" if c.ratio >= TARGET_RATIO else "MISSED"
            lines.append(f"- target {c.endpoint} ratio >= {TARGET_RATIO:.2f}: {c.ratio:.2f}, {verdict}")
    at = f"at {report.config.concurrency} connections"
    if report.config.concurrency != TARGET_CONCURRENCY:
        at += f" (the target is stated at {TARGET_CONCURRENCY})"
    slow = [f"{c.endpoint} {c.ingress.p99_ms:.0f} ms" for c in report.comparisons if c.ingress.p99_ms >= TARGET_P99_MS]
    verdict = "met" if not slow else "MISSED: " + ", ".join(slow)
    lines.append(f"- target ingress p99 < {TARGET_P99_MS:.0f} ms {at}: {verdict}")
    return lines


def cpu_lines(report: Report) -> list[str]:
    """CPU used outside the measured server and the load generator: other processes' noise."""
    shares = ", ".join(
        f"{c.endpoint} {c.bare.other_cpu_cores:.2f} / {c.ingress.other_cpu_cores:.2f}" for c in report.comparisons
    )
    lines = [
        "- cores used outside the measured workers and the load generator (bare / ingress run; for the ingress "
        f"this includes PostgreSQL and Redis): {shares}"
    ]
    if any(c.bare.other_cpu_cores > NOISY_CORES for c in report.comparisons):
        lines.append(
            f"- WARNING: other processes used more than {NOISY_CORES} cores during a bare run: its rps and ratio "
            "are unreliable; rerun on a quiet machine (server CPU ms/request is the steadier figure)"
        )
    return lines


def config_lines(report: Report) -> list[str]:
    config = report.config
    gunicorn = gunicorn_settings()
    return [
        f"- config: {config.workers} gunicorn workers ({gunicorn['worker_class']}, worker_connections "
        f"{gunicorn['worker_connections']}, keepalive {gunicorn['keepalive']} s) for both apps; "
        f"{config.concurrency} keep-alive connections from {config.generators} load generator "
        f"process{'es' if config.generators > 1 else ''}; "
        f"{config.warmup:g} s warm-up + {config.seconds:g} s measured per run",
        f"- ingress: DB pool per worker {report.pool}; "
        f"PostgreSQL {report.postgres}, Redis {report.redis}; BCRYPT_ROUNDS={BCRYPT_ROUNDS} for registration; "
        f"rate limits {UNLIMITED_RATE}/min (limiter still hits Redis); access log to var/bench/ingress.log",
        f"- machine: {os.cpu_count()} cores, load average {report.load_average:.2f} before the run "
        "(anything else running on the machine takes CPU from both servers and makes the figures noisy)",
    ]


def gunicorn_settings() -> dict[str, Any]:
    return runpy.run_path(str(GUNICORN_CONF))


def write_results(report: Report, path: Path) -> None:
    data = {
        "config": asdict(report.config),
        "ingress_db_pool": report.pool,
        "postgres": report.postgres,
        "redis": report.redis,
        "bcrypt_rounds": BCRYPT_ROUNDS,
        "results": [{**asdict(c), "ratio": round(c.ratio, 4)} for c in report.comparisons],
        "peak_rss_mb": round(report.memory.peak_mb, 1),
        "idle_rss_mb": round(report.memory.idle_kb / 1024, 1),
        "ingress_log": asdict(report.ingress_log),
        "errors": report.errors,
        "load_average_before": report.load_average,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    VAR.mkdir(parents=True, exist_ok=True)
    config = Config.from_env(os.environ)
    try:
        report = run(config, os.environ)
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    print(render(report))
    write_results(report, VAR / "results.json")
    print(f"\nbench: results in {VAR / 'results.json'}", file=sys.stderr)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
