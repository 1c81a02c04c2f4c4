"""`make load`: Locust's candidates, referees and employers (loadtests/locustfile.py) against a running system.

What is measured
    Locust runs headless against the ingress at HOST, the users' event streams against RELAY_URL,
    USERS users started SPAWN_RATE per second, for DURATION. Printed afterwards, per endpoint
    (route template), from Locust's stats CSV: requests, failures, requests/s and p50/p95/p99 in
    ms (the relay's rows are type SSE: opening a stream, and a 202 until the event saying its
    operation ended). While it runs, every LOAD_SAMPLE_SECONDS: the length of each Celery queue in
    the broker (Redis lists named after the queues ai, email, sms, audit, sync; kombu's priority
    lists `<queue>\\x06\\x16<n>` are added in, should priorities ever be used) and the broker's
    `unacked` hash, reported as max and mean, i.e. the queue lag; and the largest RSS of an ingress
    gunicorn worker (the children of the gunicorn serving `ingress.app:app`, from /proc).
    Afterwards the no-loss check: every operation created since the run started (PostgreSQL's
    clock) must reach a terminal status (succeeded, failed, dead, cancelled) within LOAD_DRAIN_SECONDS;
    the count still open is printed.

    The targets at USERS=1500: p95 < 50 ms per endpoint, no failed request, no operation left open,
    an ingress worker's RSS < 256 MB. The exit status is 1 when a request failed or an operation is
    still open.

Stepping
    With STEPS (e.g. 1500,3000,4500,6000) Locust runs once per step, in order, with that many users
    (SPAWN_RATE and DURATION as above, a fresh LOAD_RUN_ID, queues and RSS sampled per step).
    Between steps it waits up to LOAD_DRAIN_SECONDS for the broker's queues and `unacked` to be
    empty, so one step's backlog does not spill into the next. A step holds when no request failed
    and the p95 of every row is at most LOAD_P95_LIMIT_MS: every endpoint, and the relay's rows,
    among them a 202 until the event saying its operation ended, so workers falling behind count
    too. Unless LOAD_STOP_AT_FIRST_MISS is 0, the first step that does not hold is the last.
    Printed: each step's endpoint and queue tables, the no-loss check once (operations since the
    first step), a capacity table (per step: req/s, failures, p50/p95/p99, the slowest endpoint's
    p95, the longest queue, the ingress worker's peak RSS, holds) and the capacity, the largest step
    that holds. The exit status is 1 only when an operation is still open: a step that does not hold
    is a result, not an error.

Starting the system for it
    Every simulated user registers with real bcrypt and, in one process, all come from 127.0.0.1
    (each sends its own X-Forwarded-For, believed from loopback): start the system with a cheap hash
    and the limiter never refusing, as `make bench` does (loadtests/servers.py), e.g.
        BCRYPT_ROUNDS=4 RATE_LIMIT_PER_MINUTE=1000000 LOGIN_RATE_LIMIT_PER_MINUTE=1000000 make run
    Referees read their links from the file outbox (SMTP_URL unset), <DEEPREF_VAR_DIR>/mail.

Where PostgreSQL and Redis are
    DATABASE_URL and REDIS_URL (BROKER_URL first for the queues) when set: give the same as the
    system's. When unset, `make run` started embedded servers under DEEPREF_VAR_DIR (<project>/var)
    and only printed their URLs, so they are found from their files: PostgreSQL from
    var/postgres/postmaster.pid (port and socket directory; database `postgres`, user `postgres`),
    Redis from var/redis/url, which the embedded Redis writes while it runs.

Output
    var/load/ (LOAD_DIR): Locust's CSVs (load_stats.csv, load_stats_history.csv, load_failures.csv,
    load_exceptions.csv), its HTML report (report.html) and log (locust.log); the summary also as
    summary.json. With STEPS, each step's files in users-<step>/ and the figures and the capacity in
    capacity.json.

Environment: HOST (http://127.0.0.1:8000), RELAY_URL (http://127.0.0.1:8001), USERS (1500),
SPAWN_RATE (50), DURATION (3m), STEPS (unset: one run at USERS), LOAD_P95_LIMIT_MS (500),
LOAD_STOP_AT_FIRST_MISS (1), DATABASE_URL, REDIS_URL, BROKER_URL, DEEPREF_VAR_DIR, LOAD_DIR
(var/load), LOAD_SAMPLE_SECONDS (2), LOAD_DRAIN_SECONDS (60).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import psycopg
import redis

from domain.core.config import PROJECT_ROOT
from domain.core.embedded import REDIS_URL_FILE

QUEUES = ("ai", "email", "sms", "audit", "sync")
# kombu's Redis transport keeps priorities 1-9 in lists `<queue><sep><step>` (sep "\x06\x16").
PRIORITY_STEPS = (3, 6, 9)
PRIORITY_SEPARATOR = "\x06\x16"
TERMINAL = ("succeeded", "failed", "dead", "cancelled")
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class Config:
    host: str
    relay_url: str
    users: int
    spawn_rate: float
    duration: str
    var_dir: Path
    out_dir: Path
    sample_seconds: float
    drain_seconds: float
    steps: tuple[int, ...]
    p95_limit_ms: float
    stop_at_first_miss: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        var_dir = Path(env.get("DEEPREF_VAR_DIR", PROJECT_ROOT / "var"))
        return cls(
            host=env.get("HOST", "http://127.0.0.1:8000").rstrip("/"),
            relay_url=env.get("RELAY_URL", "http://127.0.0.1:8001").rstrip("/"),
            users=int(env.get("USERS", "1500")),
            spawn_rate=float(env.get("SPAWN_RATE", "50")),
            duration=env.get("DURATION", "3m"),
            var_dir=var_dir,
            out_dir=Path(env.get("LOAD_DIR", var_dir / "load")),
            sample_seconds=float(env.get("LOAD_SAMPLE_SECONDS", "2")),
            drain_seconds=float(env.get("LOAD_DRAIN_SECONDS", "60")),
            steps=tuple(int(step) for step in env.get("STEPS", "").split(",") if step.strip()),
            p95_limit_ms=float(env.get("LOAD_P95_LIMIT_MS", "500")),
            stop_at_first_miss=env.get("LOAD_STOP_AT_FIRST_MISS", "1").strip().lower() not in ("0", "false", "no"),
        )


# --- where the system's PostgreSQL and Redis are ----------------------------------------------


def database_url(env: Mapping[str, str], var_dir: Path) -> str:
    """A libpq URL: DATABASE_URL, else the embedded server `make run` started (its postmaster.pid)."""
    if url := env.get("DATABASE_URL"):
        return url.replace("postgresql+psycopg://", "postgresql://", 1)
    pid_file = var_dir / "postgres" / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except FileNotFoundError:
        sys.exit(f"load: DATABASE_URL is unset and no embedded PostgreSQL runs ({pid_file} is missing)")
    # postmaster.pid: pid, data directory, start time, port, socket directory, listen address, …
    port, socket_dir = lines[3].strip(), lines[4].strip()
    return f"postgresql://postgres@/postgres?host={quote(socket_dir or '/tmp', safe='')}&port={port}"


def redis_url(env: Mapping[str, str], var_dir: Path) -> str:
    """BROKER_URL, else REDIS_URL, else the embedded Redis `make run` started (var/redis/url)."""
    if url := env.get("BROKER_URL") or env.get("REDIS_URL"):
        return url
    url_file = var_dir / "redis" / REDIS_URL_FILE
    try:
        return url_file.read_text().strip()
    except FileNotFoundError:
        sys.exit(f"load: REDIS_URL is unset and no embedded Redis runs ({url_file} is missing)")


# --- sampling during the run ------------------------------------------------------------------


@dataclass
class Samples:
    queues: dict[str, list[int]] = field(default_factory=lambda: {name: [] for name in (*QUEUES, "unacked")})
    worker_rss_kb: int = 0

    def maxima(self) -> dict[str, int]:
        """The longest each queue (and `unacked`) was when sampled."""
        return {name: max(lengths, default=0) for name, lengths in self.queues.items()}


def queue_lengths(client: redis.Redis) -> dict[str, int]:
    """Messages waiting in each queue (all its priority lists), and delivered but unacknowledged."""
    pipe = client.pipeline(transaction=False)
    for name in QUEUES:
        pipe.llen(name)
        for step in PRIORITY_STEPS:
            pipe.llen(f"{name}{PRIORITY_SEPARATOR}{step}")
    pipe.hlen("unacked")
    counts = [int(n) for n in pipe.execute()]
    per_queue = len(PRIORITY_STEPS) + 1
    lengths = {name: sum(counts[i * per_queue : (i + 1) * per_queue]) for i, name in enumerate(QUEUES)}
    return lengths | {"unacked": counts[-1]}


def ingress_worker_pids() -> list[int]:
    """The workers (not the master) of the gunicorn serving ingress.app:app on this machine."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"ingress.app:app" not in (proc / "cmdline").read_bytes():
                continue
            parent = Path("/proc") / _field((proc / "status").read_text(), "PPid") / "cmdline"
            if b"ingress.app:app" in parent.read_bytes():
                found.append(int(proc.name))
        except (OSError, StopIteration):
            continue
    return sorted(found)


def ingress_worker_rss_kb() -> int:
    """The largest VmRSS (kB) among the ingress's gunicorn workers (0 if none)."""
    largest = 0
    for pid in ingress_worker_pids():
        try:
            largest = max(largest, int(_field(Path(f"/proc/{pid}/status").read_text(), "VmRSS").split()[0]))
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return largest


def _field(status: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith(f"{name}:"))


def sample(client: redis.Redis, every: float, stop: threading.Event, samples: Samples) -> None:
    while not stop.wait(every):
        try:
            for name, length in queue_lengths(client).items():
                samples.queues[name].append(length)
        except redis.RedisError as exc:
            print(f"load: broker sample failed: {exc}", file=sys.stderr)
        samples.worker_rss_kb = max(samples.worker_rss_kb, ingress_worker_rss_kb())


# --- the run ----------------------------------------------------------------------------------


def run_locust(config: Config, run_id: str) -> int:
    config.out_dir.mkdir(parents=True, exist_ok=True)
    (config.out_dir / "locust.log").unlink(missing_ok=True)  # Locust appends to it
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", config.host, "--users", str(config.users), "--spawn-rate", str(config.spawn_rate),
        "--run-time", config.duration, "--stop-timeout", "10",
        "--csv", str(config.out_dir / "load"), "--csv-full-history", "--html", str(config.out_dir / "report.html"),
        "--logfile", str(config.out_dir / "locust.log"), "--loglevel", "WARNING", "--only-summary",
    ]  # fmt: skip
    env = {**os.environ, "LOAD_RUN_ID": run_id, "RELAY_URL": config.relay_url, "DEEPREF_VAR_DIR": str(config.var_dir)}
    print(
        f"load: {config.users} users (+{config.spawn_rate:g}/s) for {config.duration} against {config.host}", flush=True
    )
    with open(config.out_dir / "locust.out", "wb") as output:
        return subprocess.call(command, env=env, cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT)


def measured_run(config: Config, broker: redis.Redis, run_id: str) -> tuple[int, Samples]:
    """Locust once, sampling the queues and the ingress workers' RSS meanwhile; (Locust's status, samples)."""
    samples, stop = Samples(), threading.Event()
    sampler = threading.Thread(target=sample, args=(broker, config.sample_seconds, stop, samples), daemon=True)
    sampler.start()
    try:
        return run_locust(config, run_id), samples
    finally:
        stop.set()
        sampler.join()


def drain_queues(broker: redis.Redis, wait: float) -> bool:
    """Wait up to `wait` s for every queue and `unacked` to be empty; whether they are."""
    deadline = time.monotonic() + wait
    while True:
        try:
            lengths = queue_lengths(broker)
        except redis.RedisError as exc:
            lengths = {"broker error": 1}
            print(f"load: broker sample failed: {exc}", file=sys.stderr)
        if not any(lengths.values()):
            return True
        if time.monotonic() > deadline:
            print(f"load: the queues are not empty after {wait:g} s: {json.dumps(lengths)}", flush=True)
            return False
        time.sleep(1)


def open_operations(dsn: str, since: datetime, wait: float) -> tuple[int, dict[str, int]]:
    """Wait up to `wait` s for the operations created since `since` to end; (still open, count by status)."""
    deadline = time.monotonic() + wait
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT status::text, count(*) FROM operations WHERE created_at >= %s GROUP BY 1", (since,)
            ).fetchall()
            by_status = {str(status).lower(): int(count) for status, count in rows}
            still_open = sum(n for status, n in by_status.items() if status not in TERMINAL)
            if still_open == 0 or time.monotonic() > deadline:
                return still_open, by_status
            time.sleep(1)


def database_now(dsn: str) -> datetime:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


# --- the summary ------------------------------------------------------------------------------


def endpoint_rows(stats_csv: Path) -> list[dict[str, str]]:
    with stats_csv.open(newline="") as handle:
        return list(csv.DictReader(handle))


def render_endpoints(rows: list[dict[str, str]], samples: Samples) -> str:
    """Per endpoint requests, failures and latencies, the queue lengths and the ingress worker peak RSS."""
    lines = [
        "| type | endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = "**all**" if row["Name"] == "Aggregated" else f"`{row['Name']}`"
        lines.append(
            f"| {row['Type']} | {name} | {row['Request Count']} | {row['Failure Count']} | "
            f"{float(row['Requests/s']):.1f} | {row['50%']} | {row['95%']} | {row['99%']} |"
        )
    lines += ["", "| queue | max length | mean length |", "|---|---:|---:|"]
    for name, lengths in samples.queues.items():
        mean = statistics.fmean(lengths) if lengths else 0.0
        lines.append(f"| {name} | {max(lengths, default=0)} | {mean:.1f} |")
    lines += ["", f"ingress worker peak RSS: {samples.worker_rss_kb / 1024:.0f} MB (sampled)"]
    return "\n".join(lines)


def render_operations(still_open: int, by_status: dict[str, int]) -> str:
    return "\n".join(
        [
            f"operations created during the run: {sum(by_status.values())} {json.dumps(by_status, sort_keys=True)}",
            f"operations still open after the drain: {still_open}",
        ]
    )


def render(rows: list[dict[str, str]], samples: Samples, still_open: int, by_status: dict[str, int]) -> str:
    return f"{render_endpoints(rows, samples)}\n{render_operations(still_open, by_status)}"


# --- stepping: the capacity -------------------------------------------------------------------


@dataclass(frozen=True)
class StepFigures:
    users: int
    requests_per_second: float
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    worst_endpoint_p95_ms: float | None
    worst_endpoint: str
    max_queue_length: int
    max_queue: str
    worker_rss_kb: int
    holds: bool


def _ms(value: str) -> float | None:
    """A latency from Locust's CSV; None for its "N/A" (no request)."""
    try:
        return float(value)
    except ValueError:
        return None


# Locust's Aggregated row when the stats CSV is missing (Locust did not get to write it): no request.
NO_REQUEST = {"Name": "Aggregated", "Failure Count": "0", "Requests/s": "0", "50%": "N/A", "95%": "N/A", "99%": "N/A"}


def step_figures(users: int, rows: list[dict[str, str]], samples: Samples, p95_limit_ms: float) -> StepFigures:
    """A step's figures; it holds when no request failed and every row's p95 is at most the limit.

    The longest queue is among QUEUES (not `unacked`, which the workers' prefetch bounds)."""
    total = next((row for row in rows if row["Name"] == "Aggregated"), NO_REQUEST)
    endpoints = [(_ms(row["95%"]), f"{row['Type']} {row['Name']}") for row in rows if row is not total]
    worst_p95, worst = max(((p, name) for p, name in endpoints if p is not None), default=(None, ""))
    queue_max = samples.maxima()
    longest = max(QUEUES, key=lambda name: queue_max.get(name, 0))
    p95, failures = _ms(total["95%"]), int(total["Failure Count"])
    return StepFigures(
        users=users,
        requests_per_second=float(total["Requests/s"]),
        failures=failures,
        p50_ms=_ms(total["50%"]),
        p95_ms=p95,
        p99_ms=_ms(total["99%"]),
        worst_endpoint_p95_ms=worst_p95,
        worst_endpoint=worst,
        max_queue_length=queue_max.get(longest, 0),
        max_queue=longest if queue_max.get(longest, 0) else "",
        worker_rss_kb=samples.worker_rss_kb,
        holds=failures == 0 and worst_p95 is not None and worst_p95 <= p95_limit_ms,
    )


def capacity(steps: list[StepFigures]) -> int | None:
    """The largest step that holds (None when none does)."""
    return max((step.users for step in steps if step.holds), default=None)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def render_capacity(steps: list[StepFigures], p95_limit_ms: float) -> str:
    lines = [
        "| users | req/s | failures | p50 ms | p95 ms | p99 ms | max p95 of an endpoint ms | worst endpoint | "
        "max queue length (queue) | ingress worker peak RSS MB | holds |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for step in steps:
        queue = f"{step.max_queue_length} ({step.max_queue})" if step.max_queue else "0"
        worst = f"`{step.worst_endpoint}`" if step.worst_endpoint else ""
        lines.append(
            f"| {step.users} | {step.requests_per_second:.1f} | {step.failures} | {_cell(step.p50_ms)} | "
            f"{_cell(step.p95_ms)} | {_cell(step.p99_ms)} | {_cell(step.worst_endpoint_p95_ms)} | {worst} | "
            f"{queue} | {step.worker_rss_kb / 1024:.0f} | {'yes' if step.holds else 'no'} |"
        )
    return "\n".join(lines) + "\n\n" + capacity_line(steps, p95_limit_ms)


def capacity_line(steps: list[StepFigures], p95_limit_ms: float) -> str:
    if (users := capacity(steps)) is not None:
        return f"load: capacity: {users} users (largest step with every p95 ≤ {p95_limit_ms:g} ms, no failure)"
    return f"load: capacity: below {steps[0].users} users" if steps else "load: capacity: no step ran"


@dataclass(frozen=True)
class Step:
    figures: StepFigures
    run_id: str
    out_dir: Path
    locust_status: int
    queues_empty_before: bool  # the previous step's backlog was gone within LOAD_DRAIN_SECONDS
    queue_max: dict[str, int]

    def as_json(self) -> dict[str, object]:
        figures = {_camel(name): value for name, value in asdict(self.figures).items()}
        return figures | {
            "runId": self.run_id,
            "dir": str(self.out_dir),
            "locustExitStatus": self.locust_status,
            "queuesEmptyBefore": self.queues_empty_before,
            "queueMax": self.queue_max,
        }


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def run_step(config: Config, broker: redis.Redis, users: int, queues_empty_before: bool) -> Step:
    """Locust once at `users` into <LOAD_DIR>/users-<users>/, with a fresh LOAD_RUN_ID and samples."""
    step_config = replace(config, users=users, out_dir=config.out_dir / f"users-{users}")
    run_id = uuid.uuid4().hex[:8]
    locust_status, samples = measured_run(step_config, broker, run_id)
    stats_csv = step_config.out_dir / "load_stats.csv"
    rows = endpoint_rows(stats_csv) if stats_csv.exists() else []
    print(f"\n### {users} users\n\n{render_endpoints(rows, samples)}\n", flush=True)
    figures = step_figures(users, rows, samples, config.p95_limit_ms)
    return Step(figures, run_id, step_config.out_dir, locust_status, queues_empty_before, samples.maxima())


def run_steps(config: Config, broker: redis.Redis) -> list[Step]:
    """Each step of STEPS in order, the queues drained between; up to the first miss if so configured."""
    steps: list[Step] = []
    for users in config.steps:
        queues_empty = drain_queues(broker, config.drain_seconds) if steps else True
        steps.append(run_step(config, broker, users, queues_empty))
        if config.stop_at_first_miss and not steps[-1].figures.holds:
            break
    return steps


# --- main -------------------------------------------------------------------------------------


def single_run(config: Config, dsn: str, broker: redis.Redis, since: datetime) -> int:
    run_id = uuid.uuid4().hex[:8]
    locust_status, samples = measured_run(config, broker, run_id)
    still_open, by_status = open_operations(dsn, since, config.drain_seconds)
    rows = endpoint_rows(config.out_dir / "load_stats.csv")
    print(render(rows, samples, still_open, by_status))
    failures = sum(int(row["Failure Count"]) for row in rows if row["Name"] == "Aggregated")
    summary: dict[str, object] = {"runId": run_id, "config": {k: str(v) for k, v in asdict(config).items()}}
    summary |= {"endpoints": rows, "queues": samples.queues, "ingressWorkerPeakRssKb": samples.worker_rss_kb}
    summary |= {"operations": by_status, "stillOpen": still_open, "locustExitStatus": locust_status}
    (config.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"load: reports in {config.out_dir} (report.html, load_stats.csv, locust.log)")
    return 1 if failures or still_open or locust_status not in (0, 1) else 0


def stepped_run(config: Config, dsn: str, broker: redis.Redis, since: datetime) -> int:
    steps = run_steps(config, broker)
    still_open, by_status = open_operations(dsn, since, config.drain_seconds)
    figures = [step.figures for step in steps]
    print(render_operations(still_open, by_status))
    print(f"\n{render_capacity(figures, config.p95_limit_ms)}")
    report: dict[str, object] = {"config": {k: str(v) for k, v in asdict(config).items()}}
    report |= {"steps": [step.as_json() for step in steps], "p95LimitMs": config.p95_limit_ms}
    report |= {"capacityUsers": capacity(figures)}
    report |= {"operations": by_status, "stillOpen": still_open}
    config.out_dir.mkdir(parents=True, exist_ok=True)
    (config.out_dir / "capacity.json").write_text(json.dumps(report, indent=2))
    print(f"load: reports in {config.out_dir} (users-<step>/report.html, load_stats.csv, locust.log; capacity.json)")
    return 1 if still_open else 0


def main() -> int:
    config = Config.from_env(os.environ)
    dsn = database_url(os.environ, config.var_dir)
    broker = redis.Redis.from_url(redis_url(os.environ, config.var_dir))
    since = database_now(dsn)
    if config.steps:
        return stepped_run(config, dsn, broker, since)
    return single_run(config, dsn, broker, since)


if __name__ == "__main__":
    sys.exit(main())
