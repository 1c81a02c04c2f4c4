"""`make bench`, the `ai` queue: job analyses per second through one `ai` Celery worker process.

What is measured
    For each scenario, N `job.analyse` operations queued before the worker starts, then one
    `celery worker --queues ai` process (ingress.cli.worker_command) working the queue off:
    completed operations per second, from the first operation's `started_at` to the last one's
    `finished_at` (the operations table); p50 and p99 of each operation's `finished_at -
    started_at` (from its claim by the worker to its result; the time in the broker is not in
    it); the operations in flight on average (their durations added up over that span: how many
    of the pool's slots did work); the worker's CPU time per operation (utime + stime of the
    worker process and its pool children from /proc/<pid>/stat, from its "ready" line to the
    last operation's end); over the same time, this process's CPU (the fake provider's threads,
    the polling) and the cores the whole machine was busy. A run in which any operation did not
    succeed is invalid (exit status 1). The scenarios, all in one run:
      the local heuristics (AI_PROVIDER=local): the production pool, prefork x2 (CPU work on
      two cores), and for comparison the gevent pool of the next case;
      a language model (AI_PROVIDER=openrouter) played by tests/fakes/openrouter.py in this
      process, answering every call after BENCH_AI_DELAY seconds with a valid analysis: the
      production pool, gevent (ingress/cli.py AI_POOLS says how many greenlets and why), and
      prefork x2 as the baseline. Their bound is concurrency
      / delay operations per second. The per-user limits are raised so far that they never
      refuse but are still checked in Redis on every call; AI_MODELS names one model.

How
    EMPLOYERS employers with a draft posting of each of TITLES are created through the
    domain (users.register, jobs.create_job). Each scenario's operations are queued through
    domain.jobs.analysis.request_analysis, PER_TRANSACTION per transaction, each batch published
    to the broker after its commit by the domain's Dispatcher with the ingress's Celery sender;
    only then does the worker start, on a full queue. After each scenario the worker is stopped
    (SIGTERM, waited for) and what is left in the `ai` queue counted and removed.
    PostgreSQL and Redis are DATABASE_URL / REDIS_URL when set (the database `deepref_ai_bench`
    is dropped and created again; Redis database BENCH_AI_REDIS_DB of that server is flushed
    before and after); when unset, embedded servers under var/bench are started and stopped.

Output
    A markdown table on stdout; the same as JSON in var/bench/ai-results.json; each worker's
    log in var/bench/ai-<scenario>.log. Runs alone as `python -m loadtests.ai_bench`;
    loadtests/bench.py calls `run()`, which returns the JSON's figures (`ok` false: invalid).

Environment: BENCH_AI_LOCAL_OPS (600), BENCH_AI_REMOTE_OPS (400), BENCH_AI_DELAY (0.5 seconds),
BENCH_AI_REDIS_DB (12; the tests take 1-14 by xdist worker, 12 from the 12th on, and 14-15),
DB_POOL_SIZE (the settings' default).
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import resource
import secrets
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from domain.core.config import load_settings
from domain.core.crypto import KeyRing
from domain.core.db import Database
from domain.core.encrypted import install_keyring
from domain.jobs import service as jobs
from domain.jobs.analysis import request_analysis
from domain.jobs.models import RemoteType
from domain.operations.dispatch import Dispatcher
from domain.operations.models import TERMINAL, Operation, OperationStatus
from domain.users import service as users
from domain.users.models import Role, User
from ingress.cli import AI_POOLS, worker_command
from ingress.dispatch import celery_sender
from loadtests import servers
from loadtests.pipeline_bench import background, wait_for_worker
from loadtests.report import percentile
from loadtests.servers import BCRYPT_ROUNDS, PASSWORD, VAR, backing_services, migrate

DATABASE = "deepref_ai_bench"
EMPLOYERS, PER_TRANSACTION = 200, 50
UNLIMITED = "1000000"
POLL_SECONDS = 0.25
TITLES = ("Python Developer", "Senior Backend Engineer", "Data Engineer")  # one posting of each per employer
# About 130 words; the local heuristics find skills, years, "He will" and "salesmen" in it.
DESCRIPTION = (
    "We are a growing logistics company looking for an engineer to join our platform team in Berlin. "
    "You will design and run the services that plan our deliveries: REST APIs in Python and Django, "
    "data pipelines on PostgreSQL and Redis, and the Kubernetes setup they run on. He will work closely "
    "with our salesmen to understand what customers need. You have 5+ years of experience building web "
    "services, you write clear code and kind reviews, and you like to measure before you optimise. We "
    "offer a hybrid schedule, a learning budget and four weeks of paid holiday. Our interview has three "
    "steps: a call with the hiring manager, a take-home exercise of at most three hours, and a "
    "conversation with the team about a system you built."
)
REQUIREMENTS = ["5+ years of Python", "PostgreSQL", "Docker and Kubernetes", "Good written English"]
# The model's answer; its flagged phrase is quoted from DESCRIPTION, as the gateway checks.
ANALYSIS = {
    "skills": ["Python", "Django", "PostgreSQL", "Redis", "Kubernetes"],
    "seniority": {"level": "senior", "reason": "Five years of experience asked."},
    "clarity": {"score": 80, "notes": "Clear duties and process."},
    "exclusionaryWording": [{"phrase": "salesmen", "reason": "A gendered title.", "suggestion": "salespeople"}],
    "missingSalary": True,
    "summary": "A senior Python backend posting.",
}
Posting = tuple[uuid.UUID, uuid.UUID]  # (employer id, job id)


@contextmanager
def fake_model() -> Iterator[Any]:
    """A started FakeOpenRouter; imported at run time, since tests/ is not among the packages mypy checks."""
    fake = importlib.import_module("tests.fakes.openrouter").FakeOpenRouter()
    with fake:
        yield fake


@dataclass(frozen=True)
class Config:
    local_ops: int
    remote_ops: int
    delay: float
    redis_db: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        return cls(
            local_ops=int(env.get("BENCH_AI_LOCAL_OPS", "600")),
            remote_ops=int(env.get("BENCH_AI_REMOTE_OPS", "400")),
            delay=float(env.get("BENCH_AI_DELAY", "0.5")),
            redis_db=int(env.get("BENCH_AI_REDIS_DB", "12")),
        )


@dataclass(frozen=True)
class Scenario:
    provider: str  # "local" or "openrouter"
    pool: tuple[str, ...]  # ("--pool", NAME, "--concurrency", N)
    ops: int
    delay: float  # of the model's answer; 0 for the local heuristics

    @property
    def name(self) -> str:
        return f"{self.provider}-{self.pool[1]}x{self.pool[3]}"

    @property
    def bound(self) -> float | None:
        """Operations per second if the model's delay were the only cost (None for local)."""
        return int(self.pool[3]) / self.delay if self.delay else None


@dataclass(frozen=True)
class Sample:
    at: float
    machine: float
    worker: float
    bench: float

    @classmethod
    def take(cls, pids: Sequence[int]) -> Sample:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            time.monotonic(), servers.machine_busy_seconds(), servers.cpu_seconds(pids), own.ru_utime + own.ru_stime
        )


def scenarios(config: Config) -> list[Scenario]:
    """Each provider on its production pool first, then on the other one."""
    local, remote = tuple(AI_POOLS["local"]), tuple(AI_POOLS["openrouter"])
    return [
        Scenario("local", local, config.local_ops, 0.0),
        Scenario("local", remote, config.local_ops, 0.0),
        Scenario("openrouter", remote, config.remote_ops, config.delay),
        Scenario("openrouter", local, config.remote_ops, config.delay),
    ]


# --- the database, the postings and the queue ---------------------------------------------------


def prepare_database(server_url: str) -> str:
    """Drop and create DATABASE on the server of `server_url`; return its URL."""
    url = make_url(server_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return url.set(database=DATABASE).render_as_string(hide_password=False)


def bench_env(base: Mapping[str, str], database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **base,
        "DEEPREF_ENV": "development",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BROKER_URL": "",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "DEEPREF_VAR_DIR": str(VAR / "ai"),
        "BCRYPT_ROUNDS": str(BCRYPT_ROUNDS),
        "SMTP_URL": "",
        "AI_PROVIDER": "local",
        "LOG_LEVEL": "info",
    }


def seed(database: Database, accounts: users.Accounts) -> list[Posting]:
    """The employers and their draft postings, created through the domain."""
    postings: list[Posting] = []
    with database.transaction() as session:
        for n in range(EMPLOYERS):
            email = f"ai-employer-{n}@bench.example"
            employer, _ = users.register(
                session, accounts, email=email, password=PASSWORD, role=Role.EMPLOYER, name=f"Employer {n}"
            )
            created = [
                jobs.create_job(session, employer, jobs.JobDraft(title, DESCRIPTION, RemoteType.HYBRID, REQUIREMENTS))
                for title in TITLES
            ]
            session.flush()
            postings += [(employer.id, job.id) for job in created]
    return postings


def queue_analyses(database: Database, postings: Sequence[Posting], count: int) -> list[uuid.UUID]:
    """Ask for `count` analyses as employers do; each transaction's tasks are published after its commit."""
    ids: list[uuid.UUID] = []
    for start in range(0, count, PER_TRANSACTION):
        with database.transaction() as session:
            for n in range(start, min(count, start + PER_TRANSACTION)):
                employer_id, job_id = postings[n % len(postings)]
                ids.append(request_analysis(session, session.get_one(User, employer_id), job_id).id)
    return ids


def wait_done(database: Database, ids: Sequence[uuid.UUID], worker: Any, timeout: float) -> None:
    """Return once every operation is terminal, or after `timeout`; raise if the worker exits."""
    deadline = time.monotonic() + timeout
    query = select(func.count()).where(Operation.id.in_(ids), Operation.status.in_(TERMINAL))
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}")
        with database.session(read_only=True) as session:
            if session.scalar(query) == len(ids):
                return
        time.sleep(POLL_SECONDS)


# --- one scenario ---------------------------------------------------------------------------------


def worker_env(scenario: Scenario, env: Mapping[str, str], fake: Any) -> dict[str, str]:
    if scenario.provider == "local":
        return {**env, "AI_PROVIDER": "local"}
    limits = {"AI_REQUESTS_PER_MINUTE": UNLIMITED, "AI_DAILY_BUDGET_USD": UNLIMITED}
    return {**env, **fake.environment(), "AI_MODELS": "openai/gpt-4o-mini", **limits}


def measure(
    scenario: Scenario, env: Mapping[str, str], database: Database, postings: Sequence[Posting], fake: Any
) -> dict[str, Any]:
    print(f"ai_bench: {scenario.name}, {scenario.ops} operations ...", file=sys.stderr, flush=True)
    broker = redis.Redis.from_url(env["REDIS_URL"])
    ids = queue_analyses(database, postings, scenario.ops)
    if (queued := broker.llen("ai")) != scenario.ops:
        raise RuntimeError(f"{queued} tasks in the `ai` queue, {scenario.ops} expected")
    calls = len(fake.requests)
    name = f"ai-{scenario.name}"
    timeout = 120 + scenario.ops * (scenario.delay + 0.25) / (int(scenario.pool[3]) if scenario.delay else 1)
    with background(name, worker_command(["ai"], list(scenario.pool)), worker_env(scenario, env, fake)) as worker:
        wait_for_worker(VAR / f"{name}.log")
        pids = [worker.pid, *servers.children_of(worker.pid)]
        before = Sample.take(pids)
        wait_done(database, ids, worker, timeout)
        after = Sample.take(pids)
    leftover = int(broker.llen("ai")) + int(broker.hlen("unacked"))
    broker.delete("ai", "unacked", "unacked_index")
    with database.session(read_only=True) as session:
        rows = session.execute(
            select(Operation.status, Operation.started_at, Operation.finished_at).where(Operation.id.in_(ids))
        ).all()
    figures = summarise(scenario, [(row[0], row[1], row[2]) for row in rows], before, after)
    return {**figures, "modelCalls": len(fake.requests) - calls, "leftInQueue": leftover}


def summarise(
    scenario: Scenario, rows: Sequence[tuple[Any, Any, Any]], before: Sample, after: Sample
) -> dict[str, Any]:
    done = [(started, finished) for status, started, finished in rows if status == OperationStatus.SUCCEEDED]
    span = (max(f for _, f in done) - min(s for s, _ in done)).total_seconds() if done else 0.0
    durations = sorted((f - s).total_seconds() * 1000 for s, f in done)
    wall = after.at - before.at
    return {
        "scenario": scenario.name,
        "pool": scenario.pool[1],
        "concurrency": int(scenario.pool[3]),
        "operations": scenario.ops,
        "succeeded": len(done),
        "statuses": dict(Counter(str(status.value) for status, _, _ in rows)),
        "seconds": round(span, 3),
        "opsPerSecond": round(len(done) / span, 2) if span else 0.0,
        "boundOpsPerSecond": scenario.bound,
        # Operations running at once on average (Little's law): how many of the pool's slots were used.
        "meanInFlight": round(sum(durations) / 1000 / span, 1) if span else 0.0,
        "p50Ms": round(percentile(durations, 0.5), 1),
        "p99Ms": round(percentile(durations, 0.99), 1),
        "workerCpuMsPerOp": round((after.worker - before.worker) * 1000 / max(1, len(done)), 2),
        "benchCpuMsPerOp": round((after.bench - before.bench) * 1000 / max(1, len(done)), 2),
        "machineCoresBusy": round((after.machine - before.machine) / wall, 2) if wall else 0.0,
    }


# --- the run ----------------------------------------------------------------------------------------


def run(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run every scenario; print the table, write var/bench/ai-results.json, return its figures."""
    env = dict(os.environ if env is None else env)
    config = Config.from_env(env)
    load_average = os.getloadavg()
    VAR.mkdir(parents=True, exist_ok=True)
    with backing_services(env) as (postgres, redis_server), fake_model() as fake:
        redis_url = urlunsplit(urlsplit(redis_server)._replace(path=f"/{config.redis_db}"))
        redis.Redis.from_url(redis_url).flushdb()
        base = bench_env(env, prepare_database(postgres), redis_url)
        migrate(base)
        settings = load_settings(base)
        install_keyring(KeyRing(settings.master_key))
        database = Database.from_settings(settings)
        try:
            postings = seed(database, users.Accounts.from_settings(settings))
            # Installed after seeding: registration's own tasks (emails, audit) stay in the outbox.
            Dispatcher(database, celery_sender(settings), None).install()
            fake.delay, fake.answer = config.delay, lambda body: json.dumps(ANALYSIS)
            results = [measure(scenario, base, database, postings, fake) for scenario in scenarios(config)]
        finally:
            database.dispose()
            redis.Redis.from_url(redis_url).flushdb()
    figures = {
        "loadAverage": [round(value, 2) for value in load_average],
        "config": {
            "localOps": config.local_ops,
            "remoteOps": config.remote_ops,
            "delaySeconds": config.delay,
            "redisDb": config.redis_db,
            "dbPoolSize": settings.db_pool_size,
            "postings": len(postings),
        },
        "postgres": "DATABASE_URL" if env.get("DATABASE_URL") else "embedded",
        "redis": "REDIS_URL" if env.get("REDIS_URL") else "embedded",
        "scenarios": results,
        "ratios": ratios(results),
        "ok": all(r["succeeded"] == r["operations"] and not r["leftInQueue"] for r in results),
    }
    print(render(figures))
    (VAR / "ai-results.json").write_text(json.dumps(figures, indent=2))
    return figures


def ratios(results: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """ops/s on gevent over ops/s on prefork, per provider."""
    rate = {(r["scenario"].split("-")[0], r["pool"]): r["opsPerSecond"] for r in results}
    return {
        provider: round(rate[provider, "gevent"] / rate[provider, "prefork"], 2) if rate[provider, "prefork"] else None
        for provider in ("local", "openrouter")
    }


def render(figures: dict[str, Any]) -> str:
    lines = [
        "",
        "AI operations (job.analyse) through one `ai` worker process, queue full at start:",
        "| scenario | ops ok | ops/s | bound ops/s | in flight | p50 ms | p99 ms | worker CPU ms/op "
        "| bench CPU ms/op | cores busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in figures["scenarios"]:
        bound = f"{r['boundOpsPerSecond']:g}" if r["boundOpsPerSecond"] else "-"
        lines.append(
            f"| {r['scenario']} | {r['succeeded']}/{r['operations']} | {r['opsPerSecond']} | {bound} "
            f"| {r['meanInFlight']} | {r['p50Ms']} | {r['p99Ms']} | {r['workerCpuMsPerOp']} | {r['benchCpuMsPerOp']} "
            f"| {r['machineCoresBusy']} |"
        )
    config, ratio = figures["config"], figures["ratios"]
    lines += [
        f"gevent/prefork ops/s: local {ratio['local']}x, openrouter {ratio['openrouter']}x",
        f"model delay {config['delaySeconds']:g} s; DB_POOL_SIZE {config['dbPoolSize']}; "
        f"{config['postings']} postings; PostgreSQL {figures['postgres']}, "
        f"Redis {figures['redis']} db {config['redisDb']}; load average at start {figures['loadAverage']}",
        "bench CPU: this process (the fake model's threads, the polling); cores busy: the whole machine.",
        "model calls: " + ", ".join(f"{r['scenario']} {r['modelCalls']}" for r in figures["scenarios"]),
    ]
    if not figures["ok"]:
        lines.append("INVALID: some operations did not succeed or were left in the queue; see var/bench/ai-*.log")
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        figures = run()
    except KeyboardInterrupt:
        print("ai_bench: interrupted; worker and servers stopped", file=sys.stderr)
        return 130
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
